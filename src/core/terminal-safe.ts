/**
 * A remote host's bytes shown on the operator's terminal. A terminal obeys control characters, so a
 * host that prints ESC sequences or a carriage return can rewrite what the screen shows: set the
 * window title, write the clipboard (OSC 52), move the cursor, hide text (ESC[8m), or forge a line
 * that reads as another host's (`\r127.0.0.99: ...`). Here every byte that a terminal would act on,
 * rather than draw, is shown as visible text instead, so each line on screen starts with the true
 * host prefix and nothing else is drawn where the host did not print it:
 *
 *  - C0 controls and DEL, except tab: caret notation as `cat -v` shows them (`^M` for \r, `^[` for
 *    ESC, `^?` for DEL). A newline never reaches here: lines are split on it first.
 *  - C1 controls (U+0080-U+009F; some terminals take U+009B as CSI) and the bidirectional overrides
 *    and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what is drawn: `\u009b`.
 *  - Bytes that are not valid UTF-8 (a lone continuation byte, a cut or overlong sequence, a
 *    surrogate): `\xff`, byte by byte.
 *
 * Backslashes and carets are left as they are (Windows paths stay readable), so the escaped text is
 * for reading, not for decoding back: --json carries the exact bytes. One pass over the bytes,
 * copying runs of plain text whole: linear, and about as fast as decoding UTF-8 at all.
 */

const HEX = "0123456789abcdef";

function hexByte(b: number): string {
  return `\\x${HEX[b >> 4]}${HEX[b & 15]}`;
}

function caret(b: number): string {
  return b === 0x7f ? "^?" : `^${String.fromCharCode(b + 0x40)}`;
}

/** Length of the valid UTF-8 sequence starting at `i` (2-4), or 0 when it is not one (RFC 3629 §4). */
function sequenceLength(buf: Uint8Array, i: number): number {
  const b = buf[i]!;
  const n = buf.length;
  const cont = (k: number) => k < n && (buf[k]! & 0xc0) === 0x80;
  if (b >= 0xc2 && b <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (b >= 0xe0 && b <= 0xef) {
    const b1 = buf[i + 1];
    if (b1 === undefined) return 0;
    if (b === 0xe0 && b1 < 0xa0) return 0; // overlong
    if (b === 0xed && b1 > 0x9f) return 0; // surrogates
    return cont(i + 1) && cont(i + 2) ? 3 : 0;
  }
  if (b >= 0xf0 && b <= 0xf4) {
    const b1 = buf[i + 1];
    if (b1 === undefined) return 0;
    if (b === 0xf0 && b1 < 0x90) return 0; // overlong
    if (b === 0xf4 && b1 > 0x8f) return 0; // above U+10FFFF
    return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/** Code points that are valid UTF-8 but that a terminal acts on, or that reorder what it draws. */
function isActiveCodePoint(cp: number): boolean {
  return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

function codePointAt(buf: Uint8Array, i: number, len: number): number {
  const b = buf[i]!;
  if (len === 2) return ((b & 0x1f) << 6) | (buf[i + 1]! & 0x3f);
  if (len === 3) return ((b & 0x0f) << 12) | ((buf[i + 1]! & 0x3f) << 6) | (buf[i + 2]! & 0x3f);
  return ((b & 0x07) << 18) | ((buf[i + 1]! & 0x3f) << 12) | ((buf[i + 2]! & 0x3f) << 6) | (buf[i + 3]! & 0x3f);
}

/** `bytes` as text that is safe to write to a terminal (see the top of this file). */
export function escapeForTerminal(bytes: Uint8Array): string {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = buf.length;
  let out = "";
  let run = 0;
  let i = 0;
  while (i < n) {
    const b = buf[i]!;
    if ((b >= 0x20 && b < 0x7f) || b === 0x09) {
      i++;
      continue;
    }
    if (b < 0x80) {
      if (run < i) out += buf.toString("utf8", run, i);
      out += caret(b);
      run = ++i;
      continue;
    }
    const len = sequenceLength(buf, i);
    if (len === 0) {
      if (run < i) out += buf.toString("utf8", run, i);
      out += hexByte(b);
      run = ++i;
      continue;
    }
    const cp = codePointAt(buf, i, len);
    if (isActiveCodePoint(cp)) {
      if (run < i) out += buf.toString("utf8", run, i);
      out += `\\u${cp.toString(16).padStart(4, "0")}`;
      run = i += len;
      continue;
    }
    i += len;
  }
  if (run === 0) return buf.toString("utf8");
  if (run < n) out += buf.toString("utf8", run, n);
  return out;
}

/** True when writing `bytes` to a terminal as they are would draw exactly them (nothing escaped). */
export function isTerminalSafe(bytes: Uint8Array): boolean {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < buf.length; ) {
    const b = buf[i]!;
    if ((b >= 0x20 && b < 0x7f) || b === 0x09) {
      i++;
      continue;
    }
    if (b < 0x80) return false;
    const len = sequenceLength(buf, i);
    if (len === 0 || isActiveCodePoint(codePointAt(buf, i, len))) return false;
    i += len;
  }
  return true;
}

/** Escapes a string that came from a host (an error message, a banner) for a line of text output. */
export function escapeTextForTerminal(text: string): string {
  // Fast path: the usual message has nothing to escape.
  if (!/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/.test(text)) return text;
  return escapeForTerminal(Buffer.from(text, "utf8"));
}
