// COCO run-length encoding, as pycocotools writes it (rleToString / rleFrString).
// Runs alternate 0s and 1s, starting with 0s, over pixels in column-major order (x outer,
// y inner). Masks here are row-major Uint8Array(h * w) with 1 = inside.

/** Decode COCO compressed counts (a string) into run lengths. */
export function countsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = 1;
    let c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** Encode run lengths as COCO compressed counts. */
export function countsToString(counts) {
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = 1;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/** COCO counts string -> row-major Uint8Array(h * w). */
export function decodeMask(rle, h, w) {
  const counts = countsFromString(rle);
  const mask = new Uint8Array(h * w);
  let f = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (i % 2 === 1) {
      for (let j = f; j < f + n; j++) {
        const x = Math.floor(j / h);
        const y = j - x * h;
        mask[y * w + x] = 1;
      }
    }
    f += n;
  }
  return mask;
}

/** Row-major Uint8Array(h * w) -> COCO counts string (canonical, as pycocotools). */
export function encodeMask(mask, h, w) {
  const counts = [];
  let prev = 0;
  let run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = mask[y * w + x] ? 1 : 0;
      if (v !== prev) {
        counts.push(run);
        run = 0;
        prev = v;
      }
      run += 1;
    }
  }
  counts.push(run);
  return countsToString(counts);
}

/** Number of pixels set. */
export function area(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i];
  return n;
}
