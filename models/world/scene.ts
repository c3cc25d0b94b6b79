/**
 * The Shapes world: 64×64 scenes of one or two shapes on a black or white background.
 * Everything the rest of the project knows about the world (attributes, geometry, palette) is here.
 */
import type { Rng } from "../../shared/engine/random.ts";

export const IMAGE_SIZE = 64;
export const SHAPES = ["circle", "square", "triangle"] as const;
export const COLORS = ["red", "green", "blue", "yellow", "purple", "orange"] as const;
export const SIZES = ["small", "large"] as const;
export const BACKGROUNDS = ["black", "white"] as const;
/** Cells of the 3×3 grid in reading order; index = row * 3 + col. */
export const CELLS = [
  "top left", "top", "top right",
  "left", "center", "right",
  "bottom left", "bottom", "bottom right",
] as const;
export const DIRECTIONS = ["left", "right", "up", "down"] as const;

export type Shape = (typeof SHAPES)[number];
export type Color = (typeof COLORS)[number];
export type Size = (typeof SIZES)[number];
export type Background = (typeof BACKGROUNDS)[number];
export type Direction = (typeof DIRECTIONS)[number];

/** Saturated colours whose hues are far apart, so a pixel checker can tell them without the model. */
export const PALETTE: Record<Color, readonly [number, number, number]> = {
  red: [225, 35, 35],
  green: [40, 185, 55],
  blue: [45, 85, 235],
  yellow: [235, 215, 35],
  purple: [155, 55, 215],
  orange: [245, 135, 25],
};
export const BACKGROUND_RGB: Record<Background, readonly [number, number, number]> = {
  black: [0, 0, 0],
  white: [255, 255, 255],
};

/** Radius (half extent) in pixels. Two large shapes in adjacent cells keep a gap of ≥ 1 px. */
export const RADIUS: Record<Size, number> = { small: 6, large: 10 };
/** A square's half side relative to the radius, so its area is close to the circle's. */
export const SQUARE_HALF = 0.85;

export interface ShapeObject {
  shape: Shape;
  color: Color;
  size: Size;
  /** Centre in pixels (continuous: video frames and grounded targets sit off the grid). */
  x: number;
  y: number;
}

export interface Scene {
  background: Background;
  objects: ShapeObject[];
}

export function cellCentre(cell: number): { x: number; y: number } {
  const step = IMAGE_SIZE / 3;
  return { x: step * ((cell % 3) + 0.5), y: step * (Math.floor(cell / 3) + 0.5) };
}

/** The grid cell a point falls in. */
export function cellOf(x: number, y: number): number {
  const step = IMAGE_SIZE / 3;
  const col = Math.min(2, Math.max(0, Math.floor(x / step)));
  const row = Math.min(2, Math.max(0, Math.floor(y / step)));
  return row * 3 + col;
}

export function halfExtent(o: Pick<ShapeObject, "shape" | "size">): number {
  const r = RADIUS[o.size];
  return o.shape === "square" ? r * SQUARE_HALF : r;
}

/** Keeps a shape wholly inside the image. */
export function clampCentre(o: Pick<ShapeObject, "shape" | "size">, x: number, y: number): { x: number; y: number } {
  const h = halfExtent(o) + 0.5;
  return { x: Math.min(IMAGE_SIZE - h, Math.max(h, x)), y: Math.min(IMAGE_SIZE - h, Math.max(h, y)) };
}

export function overlaps(a: ShapeObject, b: ShapeObject, gapPx = 1): boolean {
  const ha = halfExtent(a);
  const hb = halfExtent(b);
  return Math.abs(a.x - b.x) < ha + hb + gapPx && Math.abs(a.y - b.y) < ha + hb + gapPx;
}

export interface ObjectSpec {
  shape: Shape;
  color: Color;
  size: Size;
  cell: number;
}

export function randomSpec(rng: Rng): ObjectSpec {
  return { shape: rng.pick(SHAPES), color: rng.pick(COLORS), size: rng.pick(SIZES), cell: rng.int(9) };
}

/** Places a spec at its cell centre, optionally jittered, clamped inside the image. */
export function place(spec: ObjectSpec, rng?: Rng, jitterPx = 0): ShapeObject {
  const c = cellCentre(spec.cell);
  const jx = rng && jitterPx > 0 ? rng.range(-jitterPx, jitterPx) : 0;
  const jy = rng && jitterPx > 0 ? rng.range(-jitterPx, jitterPx) : 0;
  const p = clampCentre(spec, c.x + jx, c.y + jy);
  return { shape: spec.shape, color: spec.color, size: spec.size, x: p.x, y: p.y };
}

/** Default jitter of natural scenes; generation targets use none (one canonical image per prompt). */
export const SCENE_JITTER_PX = 1.5;

/**
 * A random natural scene: 1–2 non-overlapping shapes in distinct cells. When two shapes are drawn,
 * they differ in at least one of shape and colour so each can be named.
 */
export function randomScene(rng: Rng, opts: { objects?: 1 | 2 } = {}): Scene {
  const n = opts.objects ?? (rng.bool(0.5) ? 1 : 2);
  const background = rng.pick(BACKGROUNDS);
  const first = randomSpec(rng);
  const objects = [place(first, rng, SCENE_JITTER_PX)];
  if (n === 2) {
    for (;;) {
      const second = randomSpec(rng);
      if (second.cell === first.cell) continue;
      if (second.shape === first.shape && second.color === first.color) continue;
      let o = place(second, rng, SCENE_JITTER_PX);
      if (overlaps(objects[0] as ShapeObject, o)) o = place(second);
      if (overlaps(objects[0] as ShapeObject, o)) continue;
      objects.push(o);
      break;
    }
  }
  objects.sort((a, b) => cellOf(a.x, a.y) - cellOf(b.x, b.y));
  return { background, objects };
}

/** A stable key of a scene's rendered content (used to render each distinct image once). */
export function sceneKey(s: Scene): string {
  return (
    s.background +
    "|" +
    s.objects.map((o) => `${o.shape},${o.color},${o.size},${o.x.toFixed(2)},${o.y.toFixed(2)}`).join(";")
  );
}

/** A box-mask image as Emu2 uses for grounding: a white rectangle outline on black. */
export interface BoxMask {
  /** Fractions of width/height, x0 < x1, y0 < y1. */
  box: [number, number, number, number];
  thicknessPx: number;
}
