// The login page's restrained digital rain: a few slow columns of faint glyphs on a canvas that
// screen readers never see (aria-hidden) and that never runs under prefers-reduced-motion.
const canvas = document.querySelector("canvas.rain");
const still = window.matchMedia("(prefers-reduced-motion: reduce)");

function start() {
  if (!canvas || still.matches) return;
  const ctx = canvas.getContext("2d");
  const glyphs = "0123456789ABCDEF<>/{}[]=+*#$%";
  const size = 16;
  let drops = [];
  function resize() {
    canvas.width = window.innerWidth;
    canvas.height = window.innerHeight;
    drops = Array.from({ length: Math.ceil(canvas.width / size) }, () => Math.random() * -50);
  }
  resize();
  window.addEventListener("resize", resize);
  let last = 0;
  function frame(now) {
    if (still.matches) return;
    if (now - last > 90) {
      last = now;
      ctx.fillStyle = "rgba(0, 0, 0, 0.12)";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.fillStyle = "#1f8f3d";
      ctx.font = `${size}px monospace`;
      drops.forEach((y, i) => {
        if (i % 3 !== 0) return; // every third column only: rain, not a wall
        ctx.fillText(glyphs[Math.floor(Math.random() * glyphs.length)], i * size, y * size);
        drops[i] = y * size > canvas.height && Math.random() > 0.97 ? 0 : y + 1;
      });
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
}

start();
