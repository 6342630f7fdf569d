/** Small charts of an app's traffic and its metrics (uPlot: ~50 KB, canvas, no dependencies). */
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useRef } from "preact/hooks";
import type { MetricSeries } from "./api.ts";

export const WINDOW_S = 120;

export interface Sample {
  /** Seconds since the epoch. */
  t: number;
  rps: number;
  errors: number;
  p99: number;
}

export function TrafficChart({ samples }: { samples: Sample[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const el = box.current!;
    const css = getComputedStyle(document.documentElement);
    const ink = css.getPropertyValue("--muted").trim() || "#888";
    plot.current = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: 120,
        legend: { show: true, live: false },
        cursor: { show: false },
        // The last two minutes, whatever the samples span.
        scales: {
          x: { time: true, range: () => [Date.now() / 1000 - WINDOW_S, Date.now() / 1000] },
          y: { range: (_u, _min, max) => [0, Math.max(1, max)] },
          ms: { range: (_u, _min, max) => [0, Math.max(1, max)] },
        },
        axes: [
          { stroke: ink, grid: { show: false } },
          { stroke: ink, size: 40, grid: { stroke: "rgba(128,128,128,0.15)" } },
          { scale: "ms", side: 1, stroke: ink, size: 44, grid: { show: false } },
        ],
        series: [
          {},
          { label: "req/s", stroke: "#3b82f6", width: 2 },
          { label: "5xx/s", stroke: "#ef4444", width: 2 },
          { label: "p99 ms", stroke: "#a855f7", width: 1, scale: "ms", dash: [4, 3] },
        ],
      },
      [[], [], [], []],
      el,
    );
    const resize = new ResizeObserver(() =>
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: 120 }),
    );
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  useEffect(() => {
    plot.current?.setData([
      samples.map((s) => s.t),
      samples.map((s) => s.rps),
      samples.map((s) => s.errors),
      samples.map((s) => s.p99),
    ]);
  }, [samples]);

  return (
    <div
      class="chart"
      ref={box}
      aria-label="traffic over the last minutes"
      data-samples={samples.length}
    />
  );
}

/**
 * One OTLP metric of an app over the points the receiver keeps: a gauge's or sum's value, a
 * histogram's (or summary's) mean per point, its sum over its count.
 */
export function MetricChart({ metric }: { metric: MetricSeries }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const label = `${metric.name}${metric.unit && metric.unit !== "1" ? ` (${metric.unit})` : ""}`;

  useEffect(() => {
    const el = box.current!;
    const ink = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim();
    plot.current = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: 100,
        legend: { show: true, live: false },
        cursor: { show: false },
        axes: [
          { stroke: ink || "#888", grid: { show: false } },
          { stroke: ink || "#888", size: 48, grid: { stroke: "rgba(128,128,128,0.15)" } },
        ],
        series: [{}, { label, stroke: "#0d9488", width: 2, points: { show: true, size: 4 } }],
      },
      [[], []],
      el,
    );
    const resize = new ResizeObserver(() =>
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: 100 }),
    );
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [label]);

  useEffect(() => {
    const numeric = metric.type === "gauge" || metric.type === "sum";
    plot.current?.setData([
      metric.points.map((p) => p.timeMs / 1000),
      metric.points.map((p) =>
        numeric ? p.value : p.value !== null && p.count ? p.value / p.count : null,
      ),
    ]);
  }, [metric]);

  return (
    <div
      class="chart metric"
      ref={box}
      aria-label={`${label} over time`}
      data-metric={metric.name}
      data-points={metric.points.length}
    />
  );
}
