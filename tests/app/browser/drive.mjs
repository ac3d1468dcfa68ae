// Drives the llmseg page in headless Chromium through playwright-core; prints one JSON line with what it saw.
// Usage: node drive.mjs '{"url": ..., "image": ..., "classes": ..., "label_set": ..., "bad_classes": ..., "screenshot": ..., "chromium": ...}'
// (label_set and screenshot are optional)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const opts = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), "llmseg-chromium-"));
const timings = {};
const external = [];
const started = Date.now();
const mark = (name) => { timings[name] = (Date.now() - started) / 1000; };

const context = await chromium.launchPersistentContext(profile, {
  executablePath: opts.chromium || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(opts.timeout_ms || 120000);
  page.on("request", (request) => {
    const host = new URL(request.url()).hostname;
    if (!["127.0.0.1", "localhost"].includes(host) && !request.url().startsWith("data:") && !request.url().startsWith("blob:")) {
      external.push(request.url());
    }
  });
  await page.goto(opts.url);
  await page.locator("#run").waitFor();
  mark("page_loaded");

  // upload, type the classes, segment
  await page.locator("#image-file input[type=file]").setInputFiles(opts.image);
  await page.locator("#preview img").waitFor();  // the upload reached the server and came back as the preview
  await page.locator("#classes textarea, #classes input").first().fill(opts.classes);
  if (opts.label_set) {
    await page.locator("#label-mode").getByText("label set", { exact: true }).click();
    await page.locator("#label-set textarea").fill(opts.label_set);
  }
  await page.locator("#run").click();
  await page.locator("#message .ok").waitFor();
  await page.locator("#overlay img").waitFor();
  await page.locator("#legend table").waitFor();
  await page.locator("#downloads a").first().waitFor();
  mark("segmented");
  const message = await page.locator("#message").innerText();
  const legend = await page.locator("#legend tbody tr").evaluateAll((rows) =>
    rows.map((row) => ({ name: row.dataset.class, share: row.querySelector(".llmseg-share").textContent })));
  const downloads = await page.locator("#downloads a").evaluateAll((links) =>
    links.map((a) => ({ href: a.href, text: a.textContent.trim() })));
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot, fullPage: true });
  }

  // a bad input: the page says what is wrong, and the server answers the next request
  await page.locator("#classes textarea, #classes input").first().fill(opts.bad_classes);
  await page.locator("#run").click();
  await page.locator("#message .error").waitFor();
  const error = await page.locator("#message").innerText();
  mark("bad_input_reported");
  process.stdout.write(JSON.stringify({ message, legend, downloads, error, external, timings }) + "\n");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
