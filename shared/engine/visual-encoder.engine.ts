/**
 * The visual encoder: image bytes or a grounding box → `tokens_per_image` embeddings of dim D.
 * Preprocessing follows the manifest (stretch resize, mean/std normalisation); batches run as one
 * graph call.
 */
import type { Manifest } from "./model-package.ts";
import type { Graph } from "./onnx-session.adapter.ts";
import { decodeToRgb, renderBoxMask, type RgbImage, DEFAULT_MAX_INPUT_PIXELS } from "./image-codec.ts";
import type { ImageSource } from "./sequence.ts";

export interface VisualEncoderOptions {
  graph: Graph;
  manifest: Manifest;
  /** Largest decoded input image in pixels. Default 40,000,000. */
  maxInputPixels?: number;
}

/** Embeddings of a batch: `data` holds B × tokens × dim floats. */
export interface Embeddings {
  count: number;
  tokens: number;
  dim: number;
  data: Float32Array;
}

export class VisualEncoderEngine {
  private readonly graph: Graph;
  private readonly cfg: Manifest["encoder"];
  private readonly maxInputPixels: number;

  constructor(opts: VisualEncoderOptions) {
    this.graph = opts.graph;
    this.cfg = opts.manifest.encoder;
    this.maxInputPixels = opts.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
  }

  get tokens(): number {
    return this.cfg.tokens_per_image;
  }

  get dim(): number {
    return this.cfg.dim;
  }

  /** Decodes and resizes a source to the encoder's input size (RGB uint8). */
  async prepare(src: ImageSource): Promise<RgbImage> {
    const [w, h] = this.cfg.image_size;
    if (src.kind === "box-mask") return renderBoxMask(src.box, w, h, this.cfg.box_mask_thickness);
    return decodeToRgb(src.data, w, h, this.maxInputPixels);
  }

  /** Normalised CHW floats for a batch of prepared images. */
  pixelValues(images: RgbImage[]): Float32Array {
    const [w, h] = this.cfg.image_size;
    const plane = w * h;
    const out = new Float32Array(images.length * 3 * plane);
    images.forEach((img, b) => {
      for (let c = 0; c < 3; c++) {
        const mean = this.cfg.mean[c] as number;
        const std = this.cfg.std[c] as number;
        const base = (b * 3 + c) * plane;
        for (let i = 0; i < plane; i++) out[base + i] = ((img.data[i * 3 + c] as number) / 255 - mean) / std;
      }
    });
    return out;
  }

  async encodePrepared(images: RgbImage[]): Promise<Embeddings> {
    const [w, h] = this.cfg.image_size;
    if (images.length === 0) return { count: 0, tokens: this.tokens, dim: this.dim, data: new Float32Array(0) };
    const out = await this.graph.run({ pixel_values: { dtype: "float32", dims: [images.length, 3, h, w], data: this.pixelValues(images) } });
    const emb = out.image_embeds;
    if (!emb) throw new Error("visual encoder returned no image_embeds");
    return { count: images.length, tokens: this.tokens, dim: this.dim, data: emb.data as Float32Array };
  }

  async encode(sources: ImageSource[]): Promise<Embeddings> {
    return this.encodePrepared(await Promise.all(sources.map((s) => this.prepare(s))));
  }
}
