import path from "node:path";
import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  poweredByHeader: false,
  // `next dev` serves its dev resources to localhost only; the README's URLs
  // also work with 127.0.0.1.
  allowedDevOrigins: ["127.0.0.1"],
  // The `siogate` SDK is a local package (`file:../../clients/js`), linked into
  // node_modules as a symlink; Turbopack only follows links inside its root, so
  // the root is the repository. An app that takes `siogate` from the npm registry
  // needs none of this.
  turbopack: { root: path.join(__dirname, "..", "..") },
  outputFileTracingRoot: path.join(__dirname, "..", ".."),
};

export default nextConfig;
