/**
 * Loads a model package into ready engines (the CLI's in-process path, and what each stage service
 * builds its one engine from). Every number comes from the manifest.
 */
import { readFileSync } from "node:fs";
import { ArEngine } from "./ar.engine.ts";
import { LanguageModel } from "./language-model.ts";
import { loadModelPackage, type Manifest, type ModelPackage } from "./model-package.ts";
import { Graph, type GraphOptions } from "./onnx-session.adapter.ts";
import { SequenceBuilder } from "./sequence.ts";
import { EmuTokenizer } from "./tokenizer.ts";
import { VisualDecoderEngine } from "./visual-decoder.engine.ts";
import { VisualEncoderEngine } from "./visual-encoder.engine.ts";

export type EngineName = "encoder" | "reasoner" | "decoder";

export interface LoadOptions extends GraphOptions {
  /** Which engines to build. Default all three. */
  engines?: EngineName[];
  /** Check every file's sha256 (reads the whole package once). Default true. */
  verifyHashes?: boolean;
}

export class EmuModel {
  private constructor(
    readonly pkg: ModelPackage,
    readonly tokenizer: EmuTokenizer,
    readonly builder: SequenceBuilder,
    readonly encoder: VisualEncoderEngine | null,
    readonly reasoner: ArEngine | null,
    readonly decoder: VisualDecoderEngine | null,
    private readonly graphs: Graph[],
  ) {}

  get manifest(): Manifest {
    return this.pkg.manifest;
  }

  static async load(dir: string, opts: LoadOptions = {}): Promise<EmuModel> {
    const pkg = loadModelPackage(dir, { verifyHashes: opts.verifyHashes ?? true });
    const m = pkg.manifest;
    const wanted = new Set(opts.engines ?? ["encoder", "reasoner", "decoder"]);
    const tokenizer = new EmuTokenizer(JSON.parse(readFileSync(pkg.file(m.tokenizer.file), "utf8")) as object);
    const builder = new SequenceBuilder(tokenizer, m);
    const graphs: Graph[] = [];
    const load = async (file: string): Promise<Graph> => {
      const g = await Graph.load(pkg.file(file), opts);
      graphs.push(g);
      return g;
    };
    const encoder = wanted.has("encoder") ? new VisualEncoderEngine({ graph: await load(m.encoder.file), manifest: m }) : null;
    let reasoner: ArEngine | null = null;
    if (wanted.has("reasoner")) {
      const lm = new LanguageModel({
        embedTokens: await load(m.lm.embed_tokens), projectUp: await load(m.lm.project_up), decoder: await load(m.lm.decoder),
        ...(m.lm.image_summary ? { imageSummary: await load(m.lm.image_summary) } : {}),
      }, m);
      reasoner = new ArEngine({
        lm, builder, tokenizer, maxPositions: m.lm.max_positions,
        defaults: { maxNewTokens: m.generation.max_new_tokens, numBeams: m.generation.num_beams, temperature: m.generation.temperature },
      });
    }
    let decoder: VisualDecoderEngine | null = null;
    if (wanted.has("decoder")) {
      const files = new Map<string, Graph>();
      for (const [name, d] of Object.entries(m.decoders)) {
        if (name === "default" || typeof d === "string") continue;
        for (const f of d.type === "diffusion" ? [d.unet, d.vae_decoder] : [d.file]) if (!files.has(f)) files.set(f, await load(f));
      }
      decoder = new VisualDecoderEngine({ manifest: m, graphs: files });
    }
    return new EmuModel(pkg, tokenizer, builder, encoder, reasoner, decoder, graphs);
  }

  async close(): Promise<void> {
    await Promise.all(this.graphs.map((g) => g.release()));
  }
}
