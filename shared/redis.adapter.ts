/** The only module that imports ioredis: connections for the job store (BullMQ makes its own). */
import { Redis } from "ioredis";

export type RedisClient = Redis;

export function connectRedis(url: string, opts: { name?: string; blocking?: boolean } = {}): Redis {
  return new Redis(url, {
    connectionName: opts.name,
    // BullMQ requires this for blocking connections; it is harmless elsewhere.
    maxRetriesPerRequest: opts.blocking ? null : 3,
    enableReadyCheck: true,
    lazyConnect: false,
  });
}
