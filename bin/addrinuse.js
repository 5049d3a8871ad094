#!/usr/bin/env node
// Launcher (CommonJS, see bin/package.json). It loads the CLI as one bundled file, built with the rest
// on `npm install` (scripts/bundle.mjs), because start-up is most of what `addrinuse why` costs;
// without the bundle, the ESM build in dist/cli/NAME/.
"use strict";
require("./load.js")("addrinuse");
