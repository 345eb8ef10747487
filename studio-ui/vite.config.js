import { defineConfig } from "vite";

// Built assets ship inside the Python package; no CDN at run time.
export default defineConfig({
  base: "./",
  build: {
    outDir: "../src/samkit/studio/ui",
    emptyOutDir: true,
    assetsDir: "assets",
  },
});
