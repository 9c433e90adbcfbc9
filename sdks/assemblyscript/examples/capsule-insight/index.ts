// capsule-insight with the AssemblyScript SDK, the same overlay as examples/capsule-insight (Rust):
// searches capsules for {"query": ..., "limit": N} and, when anything matched, records an
// `insight` capsule listing the hits, with their ids in the metadata's `source_capsule_ids`.
// Answers {"found": n, "insight_id": "..."} (null when nothing matched).
import { JSON } from "json-as";
import {
  NewCapsule,
  SearchHit,
  capsuleCreate,
  capsuleSearch,
  fail,
  logInfo,
  parseInput,
  rejectInput,
  respond,
} from "../../assembly/index";
export { forge_alloc } from "../../assembly/index";

/** Most hits one insight summarises. */
const MAX_LIMIT: u32 = 50;
/** Characters of each hit quoted in the insight. */
const QUOTE_CHARS = 120;

@json
class Args {
  query: string = "";
  @optional
  limit: u32 = 5;
}

@json
class Output {
  found: i32 = 0;
  insight_id: string | null = null;
}

export function process(ptr: usize, len: usize): u64 {
  const args = parseInput<Args>(ptr, len);
  const query = args.query.trim();
  if (query.length == 0) rejectInput("query must not be empty");
  if (args.limit < 1 || args.limit > MAX_LIMIT) {
    rejectInput("limit must be between 1 and " + MAX_LIMIT.toString() + ", got " + args.limit.toString());
  }
  const searched = capsuleSearch(query, args.limit);
  if (!searched.ok) fail(searched.error!.code + ": " + searched.error!.message);
  const hits = searched.value!;
  logInfo("capsule-insight: " + hits.length.toString() + " capsules match " + JSON.stringify(query));
  const out = new Output();
  out.found = hits.length;
  if (hits.length == 0) return respond<Output>(out);
  const created = capsuleCreate(insight(query, hits));
  if (!created.ok) fail(created.error!.code + ": " + created.error!.message);
  const id = created.value!.id;
  logInfo("capsule-insight: created insight " + id);
  out.insight_id = id;
  return respond<Output>(out);
}

/** The insight capsule for `hits`: a summary line, one quoted line per hit, and the sources. */
function insight(query: string, hits: SearchHit[]): NewCapsule {
  // Capsule types in sorted order with their counts, like the Rust example's BTreeMap.
  const counts = new Map<string, i32>();
  for (let i = 0; i < hits.length; i++) {
    const kind = hits[i].capsule.capsuleType;
    counts.set(kind, counts.has(kind) ? counts.get(kind) + 1 : 1);
  }
  const kinds = counts.keys().sort();
  const parts = new Array<string>();
  for (let i = 0; i < kinds.length; i++) parts.push(counts.get(kinds[i]).toString() + " " + kinds[i]);
  let content =
    "Insight for " + JSON.stringify(query) + ": " + hits.length.toString() + " related capsule" +
    (hits.length == 1 ? "" : "s") + " (" + parts.join(", ") + ").\n";
  const sources = new Array<string>();
  for (let i = 0; i < hits.length; i++) {
    const hit = hits[i];
    content += (i + 1).toString() + ". [" + hit.capsule.capsuleType + "] " + quote(hit.capsule.content) +
      " (score " + twoDecimals(hit.score) + ")\n";
    sources.push(hit.capsule.id);
  }
  const capsule = new NewCapsule("insight", content);
  capsule.metadata.set<string>("query", query);
  capsule.metadata.set<JSON.Raw>("source_capsule_ids", new JSON.Raw(JSON.stringify<string[]>(sources)));
  return capsule;
}

/** The first QUOTE_CHARS characters of `text` on one line, with an ellipsis if cut. */
function quote(text: string): string {
  const words = text.split(" ").join("\n").split("\t").join("\n").split("\r").join("\n").split("\n");
  const kept = new Array<string>();
  for (let i = 0; i < words.length; i++) if (words[i].length > 0) kept.push(words[i]);
  const flat = kept.join(" ");
  return flat.length > QUOTE_CHARS ? flat.substring(0, QUOTE_CHARS) + "…" : flat;
}

/** `value` with two decimals, as Rust's `{:.2}` prints it. */
function twoDecimals(value: f64): string {
  const hundredths = <i64>Math.round(value * 100);
  const fraction = (hundredths % 100).toString();
  return (hundredths / 100).toString() + "." + (fraction.length == 1 ? "0" + fraction : fraction);
}
