// A test guest for the AssemblyScript SDK's host-function wrappers (crates/forge-runtime/tests/
// example_overlays.rs): one entry point per wrapper, each answering what the wrapper gave,
// {"ok": value} or {"error": {"code", "message"}}, so the test sees both directions.
import { JSON } from "json-as";
import {
  Answer,
  HttpRequest,
  NewCapsule,
  capsuleCreate,
  capsuleRead,
  capsuleSearch,
  fail as forgeFail,
  httpRequest,
  logError,
  logInfo,
  output,
  parseInput,
} from "../assembly/index";
export { forge_alloc } from "../assembly/index";

function answer<T>(result: Answer<T>): u64 {
  if (result.ok) return output('{"ok":' + JSON.stringify<T>(result.value!) + "}");
  return output('{"error":' + JSON.stringify(result.error!) + "}");
}

@json
class LogArgs {
  info: string = "";
  error: string = "";
}

export function log(ptr: usize, len: usize): u64 {
  const args = parseInput<LogArgs>(ptr, len);
  logInfo(args.info);
  logError(args.error);
  return output("{}");
}

@json
class FailArgs {
  message: string = "";
}

export function fail(ptr: usize, len: usize): u64 {
  forgeFail(parseInput<FailArgs>(ptr, len).message);
  return 0;
}

@json
class ReadArgs {
  id: string = "";
}

export function read(ptr: usize, len: usize): u64 {
  return answer(capsuleRead(parseInput<ReadArgs>(ptr, len).id));
}

@json
class SearchArgs {
  query: string = "";
  limit: u32 = 10;
}

export function search(ptr: usize, len: usize): u64 {
  const args = parseInput<SearchArgs>(ptr, len);
  return answer(capsuleSearch(args.query, args.limit));
}

@json
class CreateArgs {
  content: string = "";
  type: string = "";
  metadata: JSON.Obj = new JSON.Obj();
}

export function create(ptr: usize, len: usize): u64 {
  const args = parseInput<CreateArgs>(ptr, len);
  const capsule = new NewCapsule(args.type, args.content);
  capsule.metadata = args.metadata;
  return answer(capsuleCreate(capsule));
}

@json
class HttpArgs {
  method: string = "GET";
  url: string = "";
  headers: Map<string, string> = new Map<string, string>();
  @optional
  body: string | null = null;
}

export function http(ptr: usize, len: usize): u64 {
  const args = parseInput<HttpArgs>(ptr, len);
  const request = new HttpRequest(args.method, args.url);
  request.headers = args.headers;
  request.body = args.body;
  return answer(httpRequest(request));
}
