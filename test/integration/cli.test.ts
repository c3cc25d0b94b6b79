/** The `emu` command as a user runs it (a child process through the package's bin). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";
import { renderScene } from "../../models/world/render.ts";
import { World } from "../../models/world/tasks.ts";

const run = promisify(execFile);
const BIN = join(import.meta.dirname, "../../cli/emu.mjs");

describe("emu CLI", () => {
  it("chats about an image, generates an image and a video, and explains bad usage", async () => {
    const dir = mkdtempSync(join(tmpdir(), "emu-cli-"));
    try {
      const scene = new World("eval").poolScene("singles", 0);
      const png = join(dir, "scene.png");
      writeFileSync(png, await sharp(renderScene(scene), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer());
      const chat = await run("node", [BIN, "chat", `@${png}`, "what shape is it ?", "--max-new-tokens", "4"]);
      assert.ok(chat.stdout.trim().length > 0, "chat printed nothing");
      const out = join(dir, "out.png");
      const gen = await run("node", [BIN, "generate", "a red circle at the top left", "--out", out, "--steps", "4", "--seed", "3"]);
      assert.match(gen.stdout, /out\.png \(64×64/);
      const meta = await sharp(readFileSync(out)).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ["png", 64, 64]);
      const gif = join(dir, "out.gif");
      await run("node", [BIN, "video", "a blue square moving right", "--out", gif, "--steps", "2", "--frames", "3"]);
      const gm = await sharp(readFileSync(gif), { animated: true }).metadata();
      assert.deepEqual([gm.format, gm.pages], ["gif", 3]);
      await assert.rejects(run("node", [BIN, "generate", "--box", "0.5,0.5,0.2", "a circle"]), (err: { code?: number; stderr?: string }) =>
        err.code === 2 && /--box needs x0,y0,x1,y1/.test(err.stderr ?? ""));
      await assert.rejects(run("node", [BIN, "chat", "@/nonexistent.png", "hi"]), (err: { code?: number; stderr?: string }) =>
        err.code === 2 && /cannot read image/.test(err.stderr ?? ""));
      const corrupt = join(dir, "corrupt.png");
      writeFileSync(corrupt, "not an image");
      await assert.rejects(run("node", [BIN, "chat", `@${corrupt}`, "hi"]), (err: { code?: number }) => err.code === 2);
      await assert.rejects(run("node", [BIN, "chat", "hi", "--model", join(dir, "none")]), (err: { code?: number; stderr?: string }) =>
        err.code === 2 && /no model package/.test(err.stderr ?? ""));
      await assert.rejects(run("node", [BIN, "generate", "x", "--decoder", "nope", "--out", join(dir, "never.png")]), (err: { code?: number }) => err.code === 2);
      await assert.rejects(run("node", [BIN, "chat", "hi", "--frobnicate", "1"]), (err: { code?: number }) => err.code === 2);
      const js = JSON.parse((await run("node", [BIN, "generate", "a blue square on the right", "--out", join(dir, "j.webp"), "--json"])).stdout) as Record<string, unknown>;
      assert.deepEqual([js.width, js.frames, typeof js.decode_ms, typeof js.reason_ms, js.seed], [64, 1, "number", "number", 0]);
      const chatJson = JSON.parse((await run("node", [BIN, "chat", `@${png}`, "what color is it ?", "--json"])).stdout) as { text: string; tokens_out: number };
      assert.equal(chatJson.text, scene.objects[0]!.color, "the model names the colour of a world scene");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
