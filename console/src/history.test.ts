import { describe, expect, it } from "vitest";
import { deploysOf } from "./history.tsx";

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
let id = 0;
const event = (s: number, name: string, type: string, message = "") => ({
  id: ++id,
  at: at(s),
  name,
  type,
  message,
});

describe("deploysOf", () => {
  it("groups deploy events close in time into deploys, newest first, with each outcome and old -> new revision", () => {
    const deploys = deploysOf([
      event(0, "api", "deploy", "rev-a1"),
      event(1, "web", "deploy", "rev-w1"),
      event(60, "api", "deploy", "rev-a2"),
      event(61, "api", "failed", "exited with code 1"),
      event(61, "web", "unchanged", "rev-w1"),
      event(62, "api", "crashed", "later, not part of a deploy"),
    ]);
    expect(deploys).toEqual([
      {
        at: at(60),
        changes: [
          { name: "api", outcome: "failed", from: "rev-a1", to: "rev-a2" },
          { name: "web", outcome: "unchanged", to: "rev-w1" },
        ],
      },
      {
        at: at(0),
        changes: [
          { name: "api", outcome: "ready", to: "rev-a1" },
          { name: "web", outcome: "ready", to: "rev-w1" },
        ],
      },
    ]);
  });
});
