// Shared by the client scripts: where Keyway listens (argv), and a check that fails the
// script with what was expected and what came back.
'use strict';

const assert = require('node:assert/strict');

const [host, port] = [process.argv[2] || '127.0.0.1', Number(process.argv[3] || 22121)];

/**
 * Runs `main`, prints `<name> OK` on success; any failure, or no end within `limitMs`, exits 1
 * with its stack.
 */
function run(name, main, limitMs = 60000) {
  const guard = setTimeout(() => {
    console.error(`${name}: timed out after ${limitMs} ms`);
    process.exit(1);
  }, limitMs);
  main()
    .then(() => {
      clearTimeout(guard);
      console.log(`${name} OK`);
      process.exit(0);
    })
    .catch((error) => {
      console.error(`${name} FAILED:`, error);
      process.exit(1);
    });
}

module.exports = { assert, host, port, run };
