/**
 * The container entry `services/serve.ts`: its health check against a real stage server (healthy,
 * then draining, then gone), and its refusal of an unknown EMU_SERVICE.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { createStageServers } from "../../services/all-in-one/stage-servers.ts";
import { healthcheck } from "../../services/serve.ts";
import { PACKAGE_DIR } from "../support/stage-cluster.ts";

let model: EmuModel;

before(async () => {
  model = await EmuModel.load(PACKAGE_DIR);
});

after(async () => {
  await model.close();
});

test("healthcheck passes while a stage serves and fails once it drains or is gone", async () => {
  const [encoder] = createStageServers(model);
  const port = await encoder.start();
  await healthcheck("encoder", { GRPC_PORT: String(port) });
  // The encoder's health says nothing about another stage's service name on that port.
  await assert.rejects(healthcheck("reasoner", { GRPC_PORT: String(port) }));
  await encoder.stop(1000);
  await assert.rejects(healthcheck("encoder", { GRPC_PORT: String(port) }));
});

test("an unknown EMU_SERVICE exits 1 and names the valid ones", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", join(import.meta.dirname, "../../services/serve.ts")], {
    env: { ...process.env, EMU_SERVICE: "decodr" }, encoding: "utf8", timeout: 30_000,
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /EMU_SERVICE/);
  assert.match(r.stderr, /gateway/);
});
