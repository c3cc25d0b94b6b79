/**
 * Image and video bytes in and out, through sharp (decode PNG/JPEG/WebP/GIF under a pixel limit,
 * stretch-resize, encode PNG/WebP/JPEG, animated WebP/GIF) and ffmpeg for MP4 when it is on PATH.
 * Pixels inside the engines are RGB, HWC, uint8.
 */
import { spawn } from "node:child_process";
import sharp, { type Metadata, type CreateRaw } from "sharp";

export class ImageInputError extends Error {
  constructor(readonly code: "image_unreadable" | "image_too_large", message: string) {
    super(message);
  }
}

export interface RgbImage {
  width: number;
  height: number;
  /** HWC uint8 RGB */
  data: Uint8Array;
}

/** Default decode limit: 40 megapixels (sharp's own default is 268 MP). */
export const DEFAULT_MAX_INPUT_PIXELS = 40_000_000;

/** Decodes any still image sharp reads and stretches it to width × height (Emu2 resizes without keeping aspect). */
export async function decodeToRgb(bytes: Uint8Array, width: number, height: number, maxPixels = DEFAULT_MAX_INPUT_PIXELS): Promise<RgbImage> {
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: maxPixels }).metadata();
  } catch (err) {
    throw new ImageInputError("image_unreadable", `could not read the image (${(err as Error).message}); send PNG, JPEG, WebP or GIF`);
  }
  if ((meta.width ?? 0) * (meta.height ?? 0) > maxPixels) {
    throw new ImageInputError("image_too_large", `the image is ${meta.width}×${meta.height}; at most ${maxPixels} pixels are accepted`);
  }
  try {
    const data = await sharp(bytes, { limitInputPixels: maxPixels })
      .flatten({ background: { r: 0, g: 0, b: 0 } })
      .removeAlpha()
      .toColourspace("srgb")
      .resize(width, height, { fit: "fill", kernel: "cubic" })
      .raw()
      .toBuffer();
    return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (err) {
    throw new ImageInputError("image_unreadable", `could not decode the image (${(err as Error).message})`);
  }
}

export type ImageFormat = "png" | "webp" | "jpeg";
export type VideoFormat = "webp" | "gif" | "mp4";

export const IMAGE_CONTENT_TYPES: Record<ImageFormat, string> = { png: "image/png", webp: "image/webp", jpeg: "image/jpeg" };
export const VIDEO_CONTENT_TYPES: Record<VideoFormat, string> = { webp: "image/webp", gif: "image/gif", mp4: "video/mp4" };

export async function encodeImage(img: RgbImage, format: ImageFormat): Promise<Buffer> {
  const s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
  if (format === "png") return s.png().toBuffer();
  if (format === "webp") return s.webp({ lossless: true }).toBuffer();
  return s.jpeg({ quality: 92 }).toBuffer();
}

export class VideoEncodeError extends Error {
  readonly code = "video_format_unavailable";
}

/** Frames (same size) → animated WebP/GIF via sharp, or MP4 (H.264) via ffmpeg on PATH. */
export async function encodeVideo(frames: RgbImage[], fps: number, format: VideoFormat): Promise<Buffer> {
  if (frames.length === 0) throw new Error("no frames to encode");
  const { width, height } = frames[0] as RgbImage;
  if (format === "mp4") return encodeMp4(frames, fps);
  const stacked = Buffer.concat(frames.map((f) => f.data));
  const delay = Math.round(1000 / fps);
  const s = sharp(stacked, { raw: { width, height: height * frames.length, channels: 3, pageHeight: height } as CreateRaw });
  const opts = { loop: 0, delay: new Array<number>(frames.length).fill(delay) };
  return format === "gif" ? s.gif(opts).toBuffer() : s.webp({ ...opts, lossless: true }).toBuffer();
}

function encodeMp4(frames: RgbImage[], fps: number): Promise<Buffer> {
  const { width, height } = frames[0] as RgbImage;
  // H.264 needs even sides; pad by repeating the edge.
  const w = width + (width % 2);
  const h = height + (height % 2);
  return new Promise((resolve, reject) => {
    const ff = spawn("ffmpeg", [
      "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", `${width}x${height}`, "-r", String(fps),
      "-i", "pipe:0", "-vf", `pad=${w}:${h}`, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "frag_keyframe+empty_moov",
      "-f", "mp4", "pipe:1",
    ]);
    const chunks: Buffer[] = [];
    let stderr = "";
    ff.stdout.on("data", (c: Buffer) => chunks.push(c));
    ff.stderr.on("data", (c: Buffer) => { stderr += c.toString(); });
    ff.on("error", (err) => reject(new VideoEncodeError(`mp4 needs ffmpeg on PATH (${err.message}); choose webp or gif`)));
    ff.on("close", (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new VideoEncodeError(`ffmpeg failed (${code}): ${stderr.trim()}`))));
    ff.stdin.on("error", () => undefined);
    for (const f of frames) ff.stdin.write(f.data);
    ff.stdin.end();
  });
}

/** Emu2's grounding mask: a black image with a white rectangle outline at the box (fractions). */
export function renderBoxMask(box: [number, number, number, number], width: number, height: number, thicknessPx: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  const x0 = Math.round(box[0] * (width - 1));
  const y0 = Math.round(box[1] * (height - 1));
  const x1 = Math.round(box[2] * (width - 1));
  const y1 = Math.round(box[3] * (height - 1));
  const t = Math.max(1, thicknessPx);
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      if (x - x0 < t || x1 - x < t || y - y0 < t || y1 - y < t) data.fill(255, (y * width + x) * 3, (y * width + x) * 3 + 3);
    }
  }
  return { width, height, data };
}
