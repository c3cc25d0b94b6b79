/**
 * The job API's request and object schemas (DESIGN.md "The job API"). The gateway validates with
 * these, the OpenAPI document is generated from them, and the orchestrator reads the same types.
 * Model-dependent defaults (steps, guidance, frames…) are filled from the manifest, not here.
 */
import { z } from "zod";

export const TASKS = ["complete", "chat", "generate", "video"] as const;
export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"] as const;
export const WEBHOOK_EVENTS = ["started", "output", "completed"] as const;

const fraction = z.number().min(0).max(1);
export const boxSchema = z.tuple([fraction, fraction, fraction, fraction])
  .refine(([x0, y0, x1, y1]) => x0 < x1 && y0 < y1, { message: "box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (fractions 0–1)" });

export const imageUrlSchema = z.string().min(1).max(8_000_000).refine(
  (u) => /^https:\/\//.test(u) || /^data:image\/(png|jpeg|webp|gif);base64,/.test(u) || /^upload:\/\/u_[A-Za-z0-9]+$/.test(u) || /^http:\/\//.test(u),
  { message: "image url must be https://…, a data:image/(png|jpeg|webp|gif);base64 URI, or upload://<id>" },
);

export const partSchema = z.union([
  z.string().max(20_000),
  z.object({ type: z.literal("text"), text: z.string().max(20_000), box: boxSchema.optional() }).strict(),
  z.object({ type: z.literal("image"), url: imageUrlSchema }).strict(),
]);
export type Part = z.infer<typeof partSchema>;

export const messageSchema = z.object({
  role: z.enum(["user", "assistant"]),
  content: z.array(partSchema).min(1).max(64),
}).strict();

export const paramsSchema = z.object({
  max_new_tokens: z.number().int().min(1).max(4096).optional(),
  temperature: z.number().min(0).max(5).optional(),
  top_k: z.number().int().min(0).max(1000).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  num_beams: z.number().int().min(1).max(8).optional(),
  length_penalty: z.number().min(-10).max(10).optional(),
  repetition_penalty: z.number().min(0.5).max(5).optional(),
  stop: z.array(z.string().min(1).max(64)).max(8).optional(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  decoder: z.string().min(1).max(32).optional(),
  steps: z.number().int().min(1).max(200).optional(),
  guidance_scale: z.number().min(0).max(30).optional(),
  frames: z.number().int().min(1).max(64).optional(),
  fps: z.number().min(1).max(60).optional(),
  output_format: z.enum(["png", "webp", "jpeg", "gif", "mp4"]).optional(),
}).strict();
export type Params = z.infer<typeof paramsSchema>;

export const createJobSchema = z.object({
  task: z.enum(TASKS),
  input: z.array(partSchema).max(64).optional(),
  messages: z.array(messageSchema).min(1).max(32).optional(),
  params: paramsSchema.default({}),
  webhook: z.string().url().max(2048).optional(),
  webhook_events_filter: z.array(z.enum(WEBHOOK_EVENTS)).min(1).optional(),
  metadata: z.record(z.string().max(64), z.union([z.string().max(512), z.number(), z.boolean()])).optional()
    .refine((m) => !m || Object.keys(m).length <= 32, { message: "metadata holds at most 32 keys" }),
}).strict().superRefine((body, ctx) => {
  if (body.messages && body.task !== "chat") ctx.addIssue({ code: "custom", path: ["messages"], message: "messages are only accepted with task \"chat\"; use input" });
  if (body.messages && body.input) ctx.addIssue({ code: "custom", path: ["input"], message: "give either input or messages, not both" });
  if (!body.messages && !body.input) ctx.addIssue({ code: "custom", path: ["input"], message: "input is required (or messages for chat)" });
  if (body.messages && body.messages[body.messages.length - 1]?.role !== "user") ctx.addIssue({ code: "custom", path: ["messages"], message: "the last message must be from the user" });
  const fmt = body.params.output_format;
  if (fmt && body.task === "generate" && !["png", "webp", "jpeg"].includes(fmt)) ctx.addIssue({ code: "custom", path: ["params", "output_format"], message: "images are png, webp or jpeg" });
  if (fmt && body.task === "video" && !["webp", "gif", "mp4"].includes(fmt)) ctx.addIssue({ code: "custom", path: ["params", "output_format"], message: "videos are webp, gif or mp4" });
  if (body.webhook_events_filter && !body.webhook) ctx.addIssue({ code: "custom", path: ["webhook_events_filter"], message: "webhook_events_filter needs a webhook" });
});
export type CreateJobRequest = z.infer<typeof createJobSchema>;

export const mediaSchema = z.object({
  url: z.string(), expires_at: z.string(), content_type: z.string(), width: z.number().int(), height: z.number().int(),
  bytes: z.number().int(), sha256: z.string(), frames: z.number().int().optional(), fps: z.number().optional(),
});

export const jobSchema = z.object({
  id: z.string(),
  task: z.enum(TASKS),
  status: z.enum(JOB_STATUSES),
  created_at: z.string(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  queue_position: z.number().int().nullable(),
  progress: z.object({ stage: z.string(), step: z.number().int(), total: z.number().int() }).nullable(),
  input: z.unknown(),
  params: paramsSchema,
  output: z.object({ text: z.string().optional(), images: z.array(mediaSchema).optional(), video: mediaSchema.optional() }).nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  metrics: z.record(z.string(), z.number()),
  metadata: z.record(z.string(), z.unknown()).optional(),
  webhook: z.string().optional(),
  webhook_events_filter: z.array(z.enum(WEBHOOK_EVENTS)).optional(),
  urls: z.object({ get: z.string(), cancel: z.string(), events: z.string() }),
});
export type Job = z.infer<typeof jobSchema>;
