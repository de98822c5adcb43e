// Remove the previous build, so that a renamed or deleted module cannot linger in dist/.
import { rmSync } from "node:fs";

rmSync(new URL("../dist/", import.meta.url), { recursive: true, force: true });
