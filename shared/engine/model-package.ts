/**
 * Loads and validates an emu-package/1 folder (the contract in DESIGN.md "The model package"):
 * the manifest's shape (zod), every listed file's presence, size and sha256. Refuses a bad package
 * with one message naming the file and the field.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

export class ModelPackageError extends Error {
  readonly code = "model_package_invalid";
}

const fileEntry = z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number().int().nonnegative() });

const scheduler = z.object({
  type: z.enum(["ddim", "euler"]),
  train_timesteps: z.number().int().positive(),
  beta_schedule: z.enum(["scaled_linear", "linear"]),
  beta_start: z.number().positive(),
  beta_end: z.number().positive(),
  prediction_type: z.enum(["epsilon", "v_prediction", "sample"]),
  timestep_spacing: z.enum(["leading", "trailing", "linspace"]).default("leading"),
  steps_offset: z.number().int().nonnegative().default(0),
});

const diffusionDecoder = z.object({
  type: z.literal("diffusion"),
  unet: z.string(),
  vae_decoder: z.string(),
  latent_shape: z.tuple([z.number().int().positive(), z.number().int().positive(), z.number().int().positive()]),
  scaling_factor: z.number().positive(),
  pooled_input: z.boolean(),
  time_ids: z.array(z.number()).optional(),
  scheduler,
  default_steps: z.number().int().positive(),
  default_guidance: z.number().positive(),
});
const directDecoder = z.object({ type: z.literal("direct"), file: z.string() });

export const manifestSchema = z.object({
  format: z.literal("emu-package/1"),
  name: z.string().min(1),
  version: z.string().min(1),
  files: z.record(z.string(), fileEntry),
  tokenizer: z.object({
    file: z.string(),
    special: z.object({
      bos: z.string(), eos: z.string(), pad: z.string(), unk: z.string(), img_start: z.string(), img_end: z.string(),
      image: z.string(), frame: z.string(), frame_end: z.string(), video: z.string(), grounding: z.string(),
      phrase_start: z.string(), phrase_end: z.string(), object_start: z.string(), object_end: z.string(),
      user: z.string(), assistant: z.string(),
    }),
    chat: z.object({
      system: z.string(), user: z.string(), assistant: z.string(), turn_end: z.string(), generation_prompt: z.string(),
    }),
  }),
  encoder: z.object({
    file: z.string(),
    image_size: z.tuple([z.number().int().positive(), z.number().int().positive()]),
    resize: z.enum(["stretch"]),
    mean: z.tuple([z.number(), z.number(), z.number()]),
    std: z.tuple([z.number().positive(), z.number().positive(), z.number().positive()]),
    tokens_per_image: z.number().int().positive(),
    dim: z.number().int().positive(),
    box_mask_thickness: z.number().int().positive(),
  }),
  lm: z.object({
    embed_tokens: z.string(), project_up: z.string(), decoder: z.string(),
    hidden: z.number().int().positive(), layers: z.number().int().positive(), heads: z.number().int().positive(),
    head_dim: z.number().int().positive(), vocab: z.number().int().positive(), max_positions: z.number().int().positive(),
    /** Optional graph (visual_embeds [B,N,D] → image_summary [B,H]) whose output is added to the
     * input embedding of each image's closing `[/IMG]`: emu2-tiny's declared deviation from Emu2. */
    image_summary: z.string().optional(),
  }),
  decoders: z.object({ default: z.string() }).catchall(z.union([diffusionDecoder, directDecoder, z.string()])),
  video: z.object({ frames: z.number().int().positive(), fps: z.number().positive() }),
  generation: z.object({
    max_new_tokens: z.number().int().positive(), num_beams: z.number().int().positive(), temperature: z.number().nonnegative(),
  }).passthrough(),
}).passthrough();

export type Manifest = z.infer<typeof manifestSchema>;

export interface ModelPackage {
  dir: string;
  manifest: Manifest;
  /** Absolute path of a file the manifest lists. */
  file(name: string): string;
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Reads and checks a package. `verifyHashes` (default true) reads every file once. */
export function loadModelPackage(dir: string, opts: { verifyHashes?: boolean } = {}): ModelPackage {
  const manifestPath = join(dir, "manifest.json");
  if (!existsSync(manifestPath)) throw new ModelPackageError(`${manifestPath}: missing (is ${dir} a model package?)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(manifestPath, "utf8"));
  } catch (err) {
    throw new ModelPackageError(`${manifestPath}: not valid JSON (${(err as Error).message})`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ModelPackageError(`${manifestPath}: field ${issue?.path.join(".") || "(root)"}: ${issue?.message}`);
  }
  const manifest = parsed.data;
  const referenced = [
    manifest.tokenizer.file, manifest.encoder.file, manifest.lm.embed_tokens, manifest.lm.project_up, manifest.lm.decoder,
    ...(manifest.lm.image_summary ? [manifest.lm.image_summary] : []),
    ...Object.entries(manifest.decoders).flatMap(([, d]) =>
      typeof d === "string" ? [] : d.type === "diffusion" ? [d.unet, d.vae_decoder] : [d.file]),
  ];
  for (const name of referenced) {
    if (!manifest.files[name]) throw new ModelPackageError(`${manifestPath}: field files["${name}"] is missing (the manifest uses ${name})`);
  }
  const defaultDecoder = manifest.decoders[manifest.decoders.default];
  if (!defaultDecoder || typeof defaultDecoder === "string") {
    throw new ModelPackageError(`${manifestPath}: field decoders.default names "${manifest.decoders.default}", which is not a decoder`);
  }
  for (const [name, entry] of Object.entries(manifest.files)) {
    const p = join(dir, name);
    if (!existsSync(p)) throw new ModelPackageError(`${p}: missing (listed in manifest.json files)`);
    const size = statSync(p).size;
    if (size !== entry.bytes) throw new ModelPackageError(`${p}: ${size} bytes, manifest.json files["${name}"].bytes says ${entry.bytes}`);
    if (opts.verifyHashes !== false && sha256(p) !== entry.sha256) {
      throw new ModelPackageError(`${p}: sha256 differs from manifest.json files["${name}"].sha256`);
    }
  }
  return { dir, manifest, file: (name) => join(dir, name) };
}
