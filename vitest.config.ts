import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "mesh/**/*.test.ts", "services/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Test files start real servers on free ports; two workers match the two cores here.
    maxWorkers: 2,
    // In CI a JSON report as well, from which .ci/run prints the "N passed, N failed" line.
    reporters: process.env.CI ? ["default", "json"] : ["default"],
    outputFile: { json: ".ci/test-results.json" },
  },
});
