/** The job request schema: what it accepts, and the field-named messages it gives for what it does not. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createJobSchema } from "../../shared/jobs/job-schema.ts";

function issues(body: unknown): string[] {
  const r = createJobSchema.safeParse(body);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
}

describe("job request schema", () => {
  it("accepts DESIGN.md's examples", () => {
    assert.deepEqual(issues({
      task: "generate", input: [{ type: "image", url: "upload://u_7f3a" }, "the same shape, in blue, at the bottom"],
      params: { seed: 7, steps: 20, guidance_scale: 3.0, output_format: "png" },
      webhook: "https://app.example.com/hooks/emu", webhook_events_filter: ["completed"],
    }), []);
    assert.deepEqual(issues({ task: "chat", messages: [{ role: "user", content: ["hi"] }, { role: "assistant", content: ["hello"] }, { role: "user", content: ["what color?"] }] }), []);
    assert.deepEqual(issues({ task: "generate", input: [{ type: "text", text: "a red circle", box: [0.1, 0.1, 0.5, 0.5] }] }), []);
    const parsed = createJobSchema.parse({ task: "complete", input: ["a"] });
    assert.deepEqual(parsed.params, {});
  });

  it("names the field and says what to do for bad bodies", () => {
    assert.match(issues({ task: "draw", input: ["x"] })[0]!, /^task: /);
    assert.match(issues({ task: "complete" })[0]!, /^input: input is required/);
    assert.match(issues({ task: "complete", messages: [{ role: "user", content: ["x"] }] }).join(), /messages: messages are only accepted with task "chat"/);
    assert.match(issues({ task: "chat", messages: [{ role: "assistant", content: ["x"] }] }).join(), /last message must be from the user/);
    assert.match(issues({ task: "generate", input: [{ type: "text", text: "x", box: [0.5, 0.1, 0.2, 0.9] }] }).join(), /x0 < x1/);
    assert.match(issues({ task: "video", input: ["x"], params: { output_format: "png" } }).join(), /params\.output_format: videos are webp, gif or mp4/);
    assert.match(issues({ task: "complete", input: ["x"], params: { temprature: 1 } }).join(), /params: .*temprature/);
    assert.match(issues({ task: "complete", input: [{ type: "image", url: "ftp://x/y.png" }] }).join(), /image url must be/);
    assert.match(issues({ task: "complete", input: ["x"], webhook_events_filter: ["completed"] }).join(), /needs a webhook/);
  });
});
