// Re-emits documents with the npm YAML writers, for tests/writers/corpora.py.
// One JSON request a line on stdin: {"writer": "js-yaml" | "yaml", "flow": bool, "doc": {...}};
// one JSON-encoded YAML text a line on stdout, in order. The process stays up between requests
// so that a test can ask for one document at a time without paying node's start-up each time.
import { createInterface } from "node:readline";
import jsyaml from "js-yaml";
import YAML from "yaml";

const WRITERS = {
  // Defaults, as a new user would call them; flow style through each writer's own option.
  "js-yaml": (doc, flow) => jsyaml.dump(doc, flow ? { flowLevel: 0 } : {}),
  yaml: (doc, flow) => YAML.stringify(doc, flow ? { collectionStyle: "flow" } : {}),
};

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line) continue;
  const { writer, flow, doc } = JSON.parse(line);
  // As a file would hold it: node's UTF-8 encoder writes a lone surrogate (npm yaml can split a
  // pair when it folds a long double-quoted line) as U+FFFD.
  const text = Buffer.from(WRITERS[writer](doc, flow), "utf8").toString("utf8");
  process.stdout.write(JSON.stringify(text) + "\n");
}
