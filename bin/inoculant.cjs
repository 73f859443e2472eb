#!/usr/bin/env node
"use strict";
// Export keeps a named pipe's reads and a dozen O_DIRECT writes in flight at once, all on libuv's thread pool, whose
// default four threads queue the pipe's reads behind the writes: at 1M rows export took 22.5-24.2 s with four
// threads against 20.4-21.3 s with eight and 19.7-20.1 s with sixteen (alternating runs). The pool reads its size
// when it starts, which an ES module entry point is too late for (loading it starts the pool): hence CommonJS.
process.env.UV_THREADPOOL_SIZE ??= "16";
// The CLI is TypeScript run through tsx's loader, so there is no build step to forget.
import("tsx/esm/api").then(({ register }) => {
  register();
  return import("../src/cli.ts");
});
