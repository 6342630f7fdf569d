import { afterEach, describe, expect, it, vi } from "vitest";
import type { EventRecord } from "../store.ts";
import { ScopeFeed, type FeedSource, type Stream } from "./watch.ts";

const scope = { project: "p", domain: "d" };

/** A control plane with `count` recorded events, answering pages the way the store does. */
function source(count: number): FeedSource {
  const all: EventRecord[] = Array.from({ length: count }, (_, i) => ({
    id: i + 1,
    at: "",
    ...scope,
    name: "app",
    type: "started",
    message: `event ${i + 1}`,
  }));
  return {
    status: async () => [],
    listRuns: async () => [],
    events: (_scope: unknown, after = 0, limit = 200) =>
      all.filter((e) => e.id > after).slice(0, limit),
    store: { onChange: () => () => {} },
  } as unknown as FeedSource;
}

/** A client stream that records what it was sent; `backlog` stands for unsent bytes. */
function client(lastEvent = 0) {
  const sent: string[] = [];
  const target = {
    backlog: 0,
    destroyed: false,
    get writableLength() {
      return this.backlog;
    },
    write(chunk: string) {
      sent.push(chunk);
      return true;
    },
    destroy() {
      this.destroyed = true;
      return this;
    },
  };
  const stream: Stream = {
    res: target as unknown as Stream["res"],
    status: "",
    runs: "",
    lastEvent,
  };
  const ids = () =>
    sent
      .filter((c) => c.startsWith("event: event"))
      .map((c) => (JSON.parse(c.slice(c.indexOf("data: ") + 6)) as EventRecord).id);
  return { stream, target, sent, ids };
}

/** Lets the feed's pushes (each re-run when there was more) run to the end. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

describe("the watch feed", () => {
  const feeds: ScopeFeed[] = [];
  afterEach(() => {
    for (const f of feeds.splice(0)) f.close();
    vi.useRealTimers();
  });
  const feed = (src: FeedSource) => {
    const f = new ScopeFeed(src, scope);
    feeds.push(f);
    return f;
  };

  it("sends a stream more than a page behind every event, in order, none skipped", async () => {
    const f = feed(source(2_500));
    const behind = client(0);
    const current = client(2_400);
    f.streams.add(behind.stream).add(current.stream);
    await f.push();
    await settle();
    expect(behind.ids()).toEqual(Array.from({ length: 2_500 }, (_, i) => i + 1));
    expect(current.ids()).toEqual(Array.from({ length: 100 }, (_, i) => 2_401 + i));
  });

  it("skips a stream that does not read, catches it up when it drains, and cuts it when stalled", async () => {
    const f = feed(source(10));
    const slow = client(0);
    const fast = client(0);
    slow.target.backlog = 2 << 20;
    f.streams.add(slow.stream).add(fast.stream);
    await f.push();
    expect(fast.ids()).toHaveLength(10);
    expect(slow.sent).toEqual([]);

    slow.target.backlog = 0; // it read what was waiting
    await f.push();
    expect(slow.ids()).toHaveLength(10);

    vi.useFakeTimers({ toFake: ["Date"] });
    slow.target.backlog = 2 << 20;
    await f.push();
    expect(slow.target.destroyed).toBe(false);
    vi.setSystemTime(Date.now() + 31_000);
    await f.push();
    expect(slow.target.destroyed).toBe(true);
    expect(f.streams.has(slow.stream)).toBe(false);
    expect(f.streams.has(fast.stream)).toBe(true);
  });
});
