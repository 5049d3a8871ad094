#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/multi-rsh.js (built on `npm install` by `prepare`).
import { run } from "../dist/cli/multi-rsh.js";
run();
