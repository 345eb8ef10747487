import assert from "node:assert/strict";
import { test } from "node:test";
import { countsFromString, decodeMask, encodeMask } from "./rle.js";

test("round trip of random masks", () => {
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let t = 0; t < 50; t++) {
    const h = 1 + Math.floor(rand() * 40);
    const w = 1 + Math.floor(rand() * 40);
    const m = new Uint8Array(h * w);
    const density = rand();
    for (let i = 0; i < m.length; i++) m[i] = rand() < density ? 1 : 0;
    const s = encodeMask(m, h, w);
    assert.deepEqual(decodeMask(s, h, w), m);
    const counts = countsFromString(s);
    assert.equal(counts.reduce((a, b) => a + b, 0), h * w);
  }
});

test("matches a string pycocotools wrote", () => {
  // pycocotools.mask.encode of this 3x4 mask gives "1240MO0"
  const m = Uint8Array.from([0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0]);
  assert.equal(encodeMask(m, 3, 4), "1240MO0");
  assert.deepEqual(decodeMask("1240MO0", 3, 4), m);
});
