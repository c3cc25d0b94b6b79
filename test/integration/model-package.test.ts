/**
 * The shipped package against its contract: manifest valid, every file's sha256 right, every graph
 * loadable with the input/output names DESIGN.md fixes, and every single-graph parity case
 * reproduced by onnxruntime within the manifest's tolerance.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModelPackage, ModelPackageError } from "../../shared/engine/model-package.ts";
import { Graph, type HostTensor } from "../../shared/engine/onnx-session.adapter.ts";

// EMU_TEST_PACKAGE points the tests at another package (e.g. a fresh export before it replaces the shipped one).
const PACKAGE_DIR = process.env.EMU_TEST_PACKAGE ?? join(import.meta.dirname, "../../models/emu2-tiny");

interface ParityTensor { dtype: "float32" | "int64"; dims: number[]; data_b64: string }
interface ParityCase { graph: string; inputs: Record<string, ParityTensor>; outputs: Record<string, ParityTensor> }

function decode(t: ParityTensor): HostTensor {
  const buf = Buffer.from(t.data_b64, "base64");
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  return { dtype: t.dtype, dims: t.dims, data: t.dtype === "int64" ? new BigInt64Array(ab) : new Float32Array(ab) };
}

describe("emu2-tiny model package", () => {
  const pkg = loadModelPackage(PACKAGE_DIR);
  const m = pkg.manifest;

  it("lists every graph DESIGN.md names, with their inputs and outputs", async () => {
    const L = m.lm.layers;
    const expected: Record<string, [string[], string[]]> = {
      [m.encoder.file]: [["pixel_values"], ["image_embeds"]],
      [m.lm.embed_tokens]: [["input_ids"], ["inputs_embeds"]],
      [m.lm.project_up]: [["visual_embeds"], ["inputs_embeds"]],
      ...(m.lm.image_summary ? { [m.lm.image_summary]: [["visual_embeds"], ["image_summary"]] as [string[], string[]] } : {}),
      [m.lm.decoder]: [
        ["inputs_embeds", "attention_mask", "position_ids", ...Array.from({ length: L }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat()],
        ["logits", "visual_embeds", ...Array.from({ length: L }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat()],
      ],
    };
    for (const d of Object.values(m.decoders)) {
      if (typeof d === "string") continue;
      if (d.type === "diffusion") {
        expected[d.unet] = [["sample", "timestep", "encoder_hidden_states", ...(d.pooled_input ? ["pooled"] : [])], ["model_output"]];
        expected[d.vae_decoder] = [["latent"], ["image"]];
      } else {
        expected[d.file] = [["encoder_hidden_states"], ["image"]];
      }
    }
    for (const [file, [inputs, outputs]] of Object.entries(expected)) {
      const g = await Graph.load(pkg.file(file));
      assert.deepEqual([...g.inputNames].sort(), [...inputs].sort(), `${file} inputs`);
      assert.deepEqual([...g.outputNames].sort(), [...outputs].sort(), `${file} outputs`);
      await g.release();
    }
  });

  it("reproduces every single-graph parity case within the manifest's tolerance", async () => {
    const graphFiles: Record<string, string> = {
      visual_encoder: m.encoder.file, embed_tokens: m.lm.embed_tokens, project_up: m.lm.project_up,
      decoder_model_merged: m.lm.decoder,
      ...(m.lm.image_summary ? { image_summary: m.lm.image_summary } : {}),
    };
    for (const d of Object.values(m.decoders)) {
      if (typeof d === "string") continue;
      if (d.type === "diffusion") { graphFiles.unet = d.unet; graphFiles.vae_decoder = d.vae_decoder; } else graphFiles.direct_decoder = d.file;
    }
    const files = readdirSync(join(PACKAGE_DIR, "parity")).filter((f) => f.endsWith(".json"));
    let checked = 0;
    for (const f of files) {
      const c = JSON.parse(readFileSync(join(PACKAGE_DIR, "parity", f), "utf8")) as ParityCase;
      const file = graphFiles[c.graph];
      if (!file) continue; // scheduler and end-to-end cases belong to the engines' tests
      const g = await Graph.load(pkg.file(file));
      const out = await g.run(Object.fromEntries(Object.entries(c.inputs).map(([k, v]) => [k, decode(v)])));
      for (const [name, want] of Object.entries(c.outputs)) {
        const got = out[name];
        assert.ok(got, `${f}: output ${name} missing`);
        assert.deepEqual(got.dims, want.dims, `${f}: ${name} dims`);
        const w = decode(want).data as Float32Array;
        const gd = got.data as Float32Array;
        let maxDiff = 0;
        for (let i = 0; i < w.length; i++) maxDiff = Math.max(maxDiff, Math.abs((gd[i] as number) - (w[i] as number)));
        assert.ok(maxDiff <= 1e-4, `${f}: ${name} max |diff| ${maxDiff} > 1e-4`);
      }
      await g.release();
      checked++;
    }
    assert.ok(checked >= 8, `only ${checked} parity cases ran`);
  });

  it("refuses a package whose file hash differs, naming the file and the field", () => {
    const dir = mkdtempSync(join(tmpdir(), "emu-pkg-"));
    try {
      cpSync(PACKAGE_DIR, dir, { recursive: true });
      writeFileSync(join(dir, "tokenizer.json"), readFileSync(join(dir, "tokenizer.json"), "utf8").replace("dax", "daz"));
      assert.throws(() => loadModelPackage(dir), (err: unknown) =>
        err instanceof ModelPackageError && /tokenizer\.json/.test(err.message) && /sha256/.test(err.message));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a manifest with a missing field, naming the field", () => {
    const dir = mkdtempSync(join(tmpdir(), "emu-pkg-"));
    try {
      cpSync(PACKAGE_DIR, dir, { recursive: true });
      const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as { encoder: Record<string, unknown> };
      delete manifest.encoder.tokens_per_image;
      writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
      assert.throws(() => loadModelPackage(dir), /encoder\.tokens_per_image/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
