/** Rasterises scenes and box masks to 64×64 RGB (HWC, uint8), anti-aliased by 4×4 supersampling. */
import {
  BACKGROUND_RGB, IMAGE_SIZE, PALETTE, RADIUS, SQUARE_HALF,
  type BoxMask, type Scene, type ShapeObject,
} from "./scene.ts";
import { renderBoxMask as drawBoxMask } from "../../shared/engine/image-codec.ts";

const SUB = 4;

function inside(o: ShapeObject, px: number, py: number): boolean {
  const r = RADIUS[o.size];
  const dx = px - o.x;
  const dy = py - o.y;
  switch (o.shape) {
    case "circle":
      return dx * dx + dy * dy <= r * r;
    case "square": {
      const h = r * SQUARE_HALF;
      return Math.abs(dx) <= h && Math.abs(dy) <= h;
    }
    case "triangle": {
      // Apex up; base 2r at y + r, apex at y - r.
      if (dy < -r || dy > r) return false;
      const halfWidth = (dy + r) / 2;
      return Math.abs(dx) <= halfWidth;
    }
  }
}

export function renderScene(scene: Scene, size = IMAGE_SIZE): Uint8Array {
  const img = new Uint8Array(size * size * 3);
  const bg = BACKGROUND_RGB[scene.background];
  for (let i = 0; i < size * size; i++) img.set(bg, i * 3);
  const scale = IMAGE_SIZE / size;
  for (const o of scene.objects) {
    const fg = PALETTE[o.color];
    const r = RADIUS[o.size] + 1;
    const x0 = Math.max(0, Math.floor((o.x - r) / scale));
    const x1 = Math.min(size - 1, Math.ceil((o.x + r) / scale));
    const y0 = Math.max(0, Math.floor((o.y - r) / scale));
    const y1 = Math.min(size - 1, Math.ceil((o.y + r) / scale));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        let hits = 0;
        for (let sy = 0; sy < SUB; sy++) {
          for (let sx = 0; sx < SUB; sx++) {
            if (inside(o, (x + (sx + 0.5) / SUB) * scale, (y + (sy + 0.5) / SUB) * scale)) hits++;
          }
        }
        if (hits === 0) continue;
        const a = hits / (SUB * SUB);
        const p = (y * size + x) * 3;
        for (let c = 0; c < 3; c++) {
          img[p + c] = Math.round((1 - a) * (img[p + c] as number) + a * (fg[c] as number));
        }
      }
    }
  }
  return img;
}

/** Emu2's grounding mask, drawn exactly as the engines draw it for a request's box. */
export function renderBoxMask(mask: BoxMask, size = IMAGE_SIZE): Uint8Array {
  return drawBoxMask(mask.box, size, size, mask.thicknessPx).data;
}
