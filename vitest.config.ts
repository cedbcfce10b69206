import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "mesh/**/*.test.ts", "services/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Test files start real servers on free ports; two workers match the two cores here.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
