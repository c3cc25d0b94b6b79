/**
 * The language of the Shapes world: how scenes are described, asked about and requested, with
 * paraphrases for inputs and one canonical form for outputs, plus the parsers the checkers use.
 */
import type { Rng } from "../../shared/engine/random.ts";
import {
  CELLS, COLORS, DIRECTIONS, SHAPES, SIZES, BACKGROUNDS, cellOf,
  type Background, type Color, type Direction, type Scene, type Shape, type ShapeObject, type Size,
} from "./scene.ts";

/** Canonical position phrase per cell (what the model is taught to say). */
export const CELL_PHRASE = [
  "at the top left", "at the top", "at the top right",
  "on the left", "in the center", "on the right",
  "at the bottom left", "at the bottom", "at the bottom right",
] as const;

/** Every accepted phrasing of a cell (inputs are drawn from these; parsers accept all). */
export const CELL_PARAPHRASES: readonly (readonly string[])[] = [
  ["at the top left", "in the top left", "in the top left corner", "at the upper left"],
  ["at the top", "on the top", "in the top middle"],
  ["at the top right", "in the top right", "in the top right corner", "at the upper right"],
  ["on the left", "at the left", "in the middle left"],
  ["in the center", "in the middle", "in the centre", "at the center"],
  ["on the right", "at the right", "in the middle right"],
  ["at the bottom left", "in the bottom left", "in the bottom left corner", "at the lower left"],
  ["at the bottom", "on the bottom", "in the bottom middle"],
  ["at the bottom right", "in the bottom right", "in the bottom right corner", "at the lower right"],
];

/** Fifty nonce words for few-shot episodes; none is a word of the world's language. */
export const NONCE_WORDS = [
  "dax", "wug", "blicket", "fep", "zup", "toma", "gazzer", "modi", "kiki", "bouba",
  "lorp", "snig", "tufa", "zib", "plim", "nart", "quix", "vark", "jern", "blick",
  "frub", "glim", "mep", "dupa", "sprock", "trame", "yeng", "kova", "pilf", "rusk",
  "zorb", "wabe", "tove", "gimble", "mome", "rath", "slithy", "borogove", "jabber", "frumious",
  "snark", "boojum", "vorpal", "tulgey", "grib", "flonk", "blorp", "quazz", "drent", "skiv",
] as const;

export const NUMBER_WORDS = ["zero", "one", "two", "three"] as const;

function article(nextWord: string): string {
  return /^[aeiou]/.test(nextWord) ? "an" : "a";
}

/** "a large red circle" (canonical: size always said). */
export function describeObject(o: Pick<ShapeObject, "shape" | "color" | "size">, withSize = true): string {
  const words = withSize ? [o.size, o.color, o.shape] : [o.color, o.shape];
  return `${article(words[0] as string)} ${words.join(" ")}`;
}

/** Canonical caption: every attribute of every object and the background. */
export function caption(scene: Scene): string {
  const parts = scene.objects.map((o) => `${describeObject(o)} ${CELL_PHRASE[cellOf(o.x, o.y)]}`);
  return `${parts.join(" and ")} , on a ${scene.background} background .`;
}

export interface ParsedObject {
  shape: Shape;
  color: Color;
  size: Size | null;
  cell: number | null;
}

const PHRASE_TO_CELL = new Map<string, number>();
CELL_PARAPHRASES.forEach((list, cell) => list.forEach((p) => PHRASE_TO_CELL.set(p, cell)));
CELLS.forEach((name, cell) => PHRASE_TO_CELL.set(name, cell));

export function normaliseText(text: string): string {
  return text
    .toLowerCase()
    .replace(/centre/g, "center")
    .replace(/colour/g, "color")
    .replace(/([.,?!:;])/g, " $1 ")
    .replace(/\s+/g, " ")
    .trim();
}

/** Finds a position phrase at the start of `words` (longest match). */
function matchPosition(words: string[], from: number): { cell: number; length: number } | null {
  for (let len = 5; len >= 1; len--) {
    const phrase = words.slice(from, from + len).join(" ");
    const cell = PHRASE_TO_CELL.get(phrase);
    if (cell !== undefined) return { cell, length: len };
  }
  return null;
}

/**
 * Parses object mentions ("[size] colour shape [position]") out of free text, in order. Used to
 * score captions and to read generation prompts; tolerant of punctuation and paraphrase.
 */
export function parseObjects(text: string): ParsedObject[] {
  const words = normaliseText(text).split(" ");
  const out: ParsedObject[] = [];
  for (let i = 0; i < words.length; i++) {
    let j = i;
    let size: Size | null = null;
    if ((SIZES as readonly string[]).includes(words[j] as string)) size = words[j++] as Size;
    if (!(COLORS as readonly string[]).includes(words[j] as string)) continue;
    const color = words[j++] as Color;
    if (!(SHAPES as readonly string[]).includes(words[j] as string)) continue;
    const shape = words[j++] as Shape;
    const pos = matchPosition(words, j);
    out.push({ shape, color, size, cell: pos ? pos.cell : null });
    i = j - 1 + (pos ? pos.length : 0);
  }
  return out;
}

export function parseBackground(text: string): Background | null {
  const m = /(black|white) background/.exec(normaliseText(text));
  return m ? (m[1] as Background) : null;
}

// ---------------------------------------------------------------- inputs with paraphrases

export function positionPhrase(rng: Rng, cell: number): string {
  return rng.pick(CELL_PARAPHRASES[cell] as readonly string[]);
}

export interface GenerationRequest {
  shape: Shape;
  color: Color;
  /** null: not said in the prompt (the world's default, large, applies). */
  size: Size | null;
  cell: number;
  /** null: not said (default black). */
  background: Background | null;
}

export const DEFAULT_SIZE: Size = "large";
export const DEFAULT_BACKGROUND: Background = "black";

const GEN_PREFIXES = ["", "", "", "draw ", "generate ", "an image of ", "a picture of ", "show "];

/** "a large blue square on the right", "draw a red circle in the top left corner on a white background". */
export function generationPrompt(rng: Rng, req: GenerationRequest): string {
  const words = req.size ? [req.size, req.color, req.shape] : [req.color, req.shape];
  const object = `${article(words[0] as string)} ${words.join(" ")}`;
  const bg = req.background ? ` on a ${req.background} background` : "";
  return `${rng.pick(GEN_PREFIXES)}${object} ${positionPhrase(rng, req.cell)}${bg}`;
}

export interface Question {
  text: string;
  answer: string;
  kind: "color" | "shape" | "count" | "position" | "size" | "background";
}

/** The shortest name that picks out object `i` of the scene ("circle", "red shape", "red circle"). */
function referent(scene: Scene, i: number, rng: Rng): string {
  const o = scene.objects[i] as ShapeObject;
  const others = scene.objects.filter((_, k) => k !== i);
  if (others.every((p) => p.shape !== o.shape)) return o.shape;
  if (others.every((p) => p.color !== o.color)) return rng.bool() ? `${o.color} shape` : `${o.color} ${o.shape}`;
  return `${o.color} ${o.shape}`;
}

export function askQuestion(rng: Rng, scene: Scene, kind?: Question["kind"]): Question {
  const k = kind ?? rng.pick(["color", "shape", "count", "position", "size", "background"] as const);
  const i = rng.int(scene.objects.length);
  const o = scene.objects[i] as ShapeObject;
  switch (k) {
    case "color": {
      const ref = scene.objects.length === 1 ? o.shape : referentAvoiding(scene, i, "color", rng);
      const t = rng.pick(["what color is the {r} ?", "what colour is the {r} ?", "which color is the {r} ?", "what is the color of the {r} ?"]);
      return { text: t.replace("{r}", ref), answer: o.color, kind: k };
    }
    case "shape": {
      const ref = scene.objects.length === 1 ? rng.pick([`${o.color} shape`, `${o.color} object`]) : referentAvoiding(scene, i, "shape", rng);
      const t = rng.pick(["what shape is the {r} ?", "which shape is the {r} ?", "what is the shape of the {r} ?"]);
      return { text: t.replace("{r}", ref), answer: o.shape, kind: k };
    }
    case "count": {
      const t = rng.pick(["how many shapes are there ?", "how many objects are there ?", "how many shapes are in the image ?"]);
      return { text: t, answer: NUMBER_WORDS[scene.objects.length] as string, kind: k };
    }
    case "position": {
      const t = rng.pick(["where is the {r} ?", "where is the {r} located ?", "in which position is the {r} ?"]);
      return { text: t.replace("{r}", referent(scene, i, rng)), answer: CELLS[cellOf(o.x, o.y)] as string, kind: k };
    }
    case "size": {
      const t = rng.pick(["is the {r} large or small ?", "is the {r} small or large ?", "what size is the {r} ?"]);
      return { text: t.replace("{r}", referent(scene, i, rng)), answer: o.size, kind: k };
    }
    case "background": {
      const t = rng.pick(["what color is the background ?", "what colour is the background ?", "is the background black or white ?"]);
      return { text: t, answer: scene.background, kind: k };
    }
  }
}

/** A name for object i that does not give away the asked attribute. */
function referentAvoiding(scene: Scene, i: number, asked: "color" | "shape", rng: Rng): string {
  const o = scene.objects[i] as ShapeObject;
  const j = 1 - i;
  const other = scene.objects[j] as ShapeObject;
  if (asked === "color") {
    if (other.shape !== o.shape) return o.shape;
    // Same shape: name it by position or size instead.
    if (other.size !== o.size) return `${o.size} ${o.shape}`;
    return `${o.shape} ${CELL_PHRASE[cellOf(o.x, o.y)]}`;
  }
  if (other.color !== o.color) return rng.bool() ? `${o.color} shape` : `${o.color} object`;
  if (other.size !== o.size) return `${o.size} shape`;
  return `shape ${CELL_PHRASE[cellOf(o.x, o.y)]}`;
}

export const CAPTION_PROMPTS = [
  "describe the image .", "what is in the image ?", "describe the scene .", "what do you see ?",
  "give a caption for the image .", "describe the image in details :",
] as const;

export const DIRECTION_PHRASES: Record<Direction, readonly string[]> = {
  left: ["moving left", "moving to the left", "going left"],
  right: ["moving right", "moving to the right", "going right"],
  up: ["moving up", "moving upward", "going up"],
  down: ["moving down", "moving downward", "going down"],
};

export function parseDirection(text: string): Direction | null {
  const t = normaliseText(text);
  for (const d of DIRECTIONS) {
    if ((DIRECTION_PHRASES[d] as readonly string[]).some((p) => t.includes(p))) return d;
  }
  return null;
}

/** Words the vocabulary must hold beyond those produced by the templates above. */
export const EXTRA_WORDS = [
  ...SHAPES, ...COLORS, ...SIZES, ...BACKGROUNDS, ...NUMBER_WORDS, "shapes", "objects", "yes", "no",
  "same", "but", "with", "in", "of", "the", "a", "an", "and", "image", "picture", "video", "frame",
  "shape", "object", "color", "size", "background", "position", "where", "what", "which", "how", "many",
];
