/**
 * An independent judge of generated images: pure pixel analysis, no model. A pixel is foreground
 * when it is saturated and bright (HSV S > 0.5, V > 0.35), which holds for every palette colour on
 * both backgrounds. Connected components of ≥ 12 px are objects; each is read as
 *   colour: nearest palette hue to the component's circular-mean hue;
 *   centre: the centroid → grid cell;
 *   shape:  a square fills its bounding box (> 0.92); a triangle (apex up) has most of its pixels in
 *           the lower half of the box (asymmetry (lower − upper)/(lower + upper) > 0.25); else a circle;
 *   size:   the larger bounding-box side (≥ 16 px: large).
 * The background is the brighter/darker majority of the unsaturated pixels.
 */
import { COLORS, IMAGE_SIZE, PALETTE, cellOf, type Background, type Color, type Shape, type Size } from "./scene.ts";

export interface DetectedObject {
  shape: Shape;
  color: Color;
  size: Size;
  cell: number;
  x: number;
  y: number;
  pixels: number;
  fill: number;
  asymmetry: number;
}

export interface Analysis {
  background: Background;
  objects: DetectedObject[];
}

const MIN_COMPONENT_PX = 12;

function hsv(r: number, g: number, b: number): { h: number; s: number; v: number } {
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  const v = max / 255;
  const s = max === 0 ? 0 : (max - min) / max;
  let h = 0;
  if (max !== min) {
    const d = max - min;
    if (max === r) h = ((g - b) / d) % 6;
    else if (max === g) h = (b - r) / d + 2;
    else h = (r - g) / d + 4;
    h *= 60;
    if (h < 0) h += 360;
  }
  return { h, s, v };
}

const PALETTE_HUES = COLORS.map((c) => ({ color: c, h: hsv(...PALETTE[c]).h }));

function nearestColor(hueDeg: number): Color {
  let best: Color = "red";
  let bestD = Infinity;
  for (const { color, h } of PALETTE_HUES) {
    const d = Math.min(Math.abs(hueDeg - h), 360 - Math.abs(hueDeg - h));
    if (d < bestD) { bestD = d; best = color; }
  }
  return best;
}

/** Analyses one HWC uint8 RGB image of side `size` (scaled to world coordinates). */
export function analyseImage(rgb: Uint8Array, size = IMAGE_SIZE): Analysis {
  const n = size * size;
  const fg = new Uint8Array(n);
  let brightBg = 0;
  let darkBg = 0;
  for (let i = 0; i < n; i++) {
    const { s, v } = hsv(rgb[i * 3] as number, rgb[i * 3 + 1] as number, rgb[i * 3 + 2] as number);
    if (s > 0.5 && v > 0.35) fg[i] = 1;
    else if (v > 0.5) brightBg++;
    else darkBg++;
  }
  const background: Background = brightBg > darkBg ? "white" : "black";
  const label = new Int32Array(n).fill(-1);
  const objects: DetectedObject[] = [];
  const stack: number[] = [];
  const scale = IMAGE_SIZE / size;
  for (let start = 0; start < n; start++) {
    if (!fg[start] || label[start] !== -1) continue;
    const id = objects.length + 1000;
    stack.push(start);
    label[start] = id;
    const members: number[] = [];
    while (stack.length) {
      const p = stack.pop() as number;
      members.push(p);
      const x = p % size;
      const y = (p - x) / size;
      for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]] as const) {
        const nx = x + dx;
        const ny = y + dy;
        if (nx < 0 || ny < 0 || nx >= size || ny >= size) continue;
        const q = ny * size + nx;
        if (fg[q] && label[q] === -1) { label[q] = id; stack.push(q); }
      }
    }
    if (members.length < MIN_COMPONENT_PX / (scale * scale)) continue;
    let sx = 0, sy = 0, hx = 0, hy = 0, upper = 0, lower = 0;
    let x0 = size, y0 = size, x1 = -1, y1 = -1;
    for (const p of members) {
      const x = p % size;
      const y = (p - x) / size;
      sx += x; sy += y;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      const { h } = hsv(rgb[p * 3] as number, rgb[p * 3 + 1] as number, rgb[p * 3 + 2] as number);
      hx += Math.cos((h * Math.PI) / 180);
      hy += Math.sin((h * Math.PI) / 180);
    }
    const mid = (y0 + y1) / 2;
    for (const p of members) {
      const y = Math.floor(p / size);
      if (y < mid) upper++;
      else if (y > mid) lower++;
    }
    const asymmetry = (lower - upper) / Math.max(1, lower + upper);
    const w = x1 - x0 + 1;
    const h = y1 - y0 + 1;
    const fill = members.length / (w * h);
    const meanHue = ((Math.atan2(hy, hx) * 180) / Math.PI + 360) % 360;
    const cx = (sx / members.length + 0.5) * scale;
    const cy = (sy / members.length + 0.5) * scale;
    const shape: Shape = fill > 0.92 ? "square" : asymmetry > 0.25 ? "triangle" : "circle";
    objects.push({
      shape, color: nearestColor(meanHue), size: Math.max(w, h) * scale >= 16 ? "large" : "small",
      cell: cellOf(cx, cy), x: cx, y: cy, pixels: members.length, fill, asymmetry,
    });
  }
  objects.sort((a, b) => a.cell - b.cell);
  return { background, objects };
}

/** The verdict on a generated single-shape image: shape, colour and cell all as asked. */
export function judgeImage(rgb: Uint8Array, want: { shape: string; color: string; cell: number }, size = IMAGE_SIZE): {
  ok: boolean; shape: boolean; color: boolean; cell: boolean; found: number;
} {
  const a = analyseImage(rgb, size);
  const o = a.objects.length === 1 ? a.objects[0] : undefined;
  const shape = !!o && o.shape === want.shape;
  const color = !!o && o.color === want.color;
  const cell = !!o && o.cell === want.cell;
  return { ok: shape && color && cell, shape, color, cell, found: a.objects.length };
}
