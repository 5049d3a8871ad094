#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/addrinuse.js (built on `npm install` by `prepare`).
import { run } from "../dist/cli/addrinuse.js";
run();
