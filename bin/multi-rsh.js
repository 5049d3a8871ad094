#!/usr/bin/env node
// Launcher (CommonJS, see bin/package.json). It loads the CLI as one bundled file, built with the rest
// on `npm install` (scripts/bundle.mjs), because module loading is a visible share of a short run;
// without the bundle, the ESM build in dist/cli/NAME/.
"use strict";
require("./load.js")("multi-rsh");
