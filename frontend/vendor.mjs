// Copies the built files of the front-end packages into service/static/vendor/,
// where Flask serves them. Run `npm ci && npm run vendor` after changing package.json;
// the copied files are committed so the service never needs npm or a network.
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "service", "static", "vendor");

const files = [
  // abcjs renders the notation (we build ABC text from the melody's notes); only its
  // renderer is used, never its synth, so no soundfont is fetched.
  ["abcjs/dist/abcjs-basic-min.js", "abcjs/abcjs-basic-min.js"],
  ["abcjs/LICENSE.md", "abcjs/LICENSE.md"],
];

for (const [from, to] of files) {
  const target = join(vendor, to);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(join(here, "node_modules", from), target);
  const { version } = JSON.parse(readFileSync(join(here, "node_modules", from.split("/")[0], "package.json")));
  console.log(`${from} (${version}) -> service/static/vendor/${to}`);
}
