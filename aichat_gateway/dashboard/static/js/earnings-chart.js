// The earnings chart: a bar per UTC day, drawn with the vendored uPlot from the page's own table
// (the chart's text alternative), so the two can never disagree.

function readTable(table) {
  const xs = [];
  const ys = [];
  for (const row of table.tBodies[0].rows) {
    const day = row.querySelector("[data-date]").dataset.date;
    const earned = row.querySelector("[data-usd]").dataset.usd;
    xs.push(Date.parse(day + "T00:00:00Z") / 1000);
    ys.push(Number(earned));
  }
  return [xs, ys];
}

// Small earnings need more than cents to tell the ticks apart.
function money(value) {
  if (value === 0 || value >= 0.01) return "$" + value.toFixed(2);
  return "$" + value.toPrecision(2);
}

function colour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function draw(holder) {
  const table = document.getElementById(holder.dataset.table);
  if (!table || typeof window.uPlot !== "function") return;
  const data = readTable(table);
  const green = colour("--green");
  const muted = colour("--muted");
  const line = colour("--line");
  const axis = { stroke: muted, grid: { stroke: line }, ticks: { stroke: line }, font: "12px IBM Plex Mono, monospace" };
  const options = {
    width: holder.clientWidth,
    height: 240,
    legend: { show: false },
    cursor: { show: false },
    scales: {
      x: { time: true, range: () => [Number(holder.dataset.since), Number(holder.dataset.until)] },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] },
    },
    axes: [{ ...axis }, { ...axis, values: (u, ticks) => ticks.map(money), size: 90 }],
    series: [
      {},
      { label: "Earned (USD)", stroke: green, fill: green + "55", width: 1, points: { show: false }, paths: window.uPlot.paths.bars({ size: [0.6, 40] }) },
    ],
  };
  const plot = new window.uPlot(options, data, holder);
  new ResizeObserver(() => plot.setSize({ width: holder.clientWidth, height: 240 })).observe(holder);
}

const holder = document.getElementById("earnings-chart");
if (holder) draw(holder);
