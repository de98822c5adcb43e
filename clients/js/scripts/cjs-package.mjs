// The package root says "type": "module", so Node would read dist/cjs/*.js as ES
// modules. This marker makes that one directory CommonJS again, for both Node and
// TypeScript's resolution of dist/cjs/*.d.ts under the "require" condition.
import { writeFileSync } from "node:fs";

writeFileSync(
  new URL("../dist/cjs/package.json", import.meta.url),
  JSON.stringify({ type: "commonjs" }, null, 2) + "\n",
);
