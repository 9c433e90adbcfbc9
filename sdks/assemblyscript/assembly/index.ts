// Forge overlay SDK for AssemblyScript: the Overlay ABI v1 (docs/abi.md) with typed host
// functions and JSON through json-as. See README.md for the build flags this SDK relies on.
import { JSON } from "json-as";

// ---- raw host imports (module "forge") ----
// A module imports only the functions its code reaches, so an overlay needs capabilities for
// exactly the wrappers it calls.

@external("forge", "log_info") declare function raw_log_info(ptr: usize, len: usize): void;
@external("forge", "log_error") declare function raw_log_error(ptr: usize, len: usize): void;
@external("forge", "fail") declare function raw_fail(ptr: usize, len: usize): void;
@external("forge", "reject_input") declare function raw_reject_input(ptr: usize, len: usize): void;
@external("forge", "capsule_read") declare function raw_capsule_read(ptr: usize, len: usize): u64;
@external("forge", "capsule_search") declare function raw_capsule_search(ptr: usize, len: usize): u64;
@external("forge", "capsule_create") declare function raw_capsule_create(ptr: usize, len: usize): u64;
@external("forge", "capsule_delete") declare function raw_capsule_delete(ptr: usize, len: usize): u64;
@external("forge", "http_request") declare function raw_http_request(ptr: usize, len: usize): u64;

// ---- the ABI: forge_alloc, arguments in, packed result out ----

/**
 * `forge_alloc(size) -> ptr`, re-exported by every overlay's entry file. The host writes the
 * arguments and every host-function answer there. The stub runtime's bump allocator serves the
 * initial memory's free tail first, so a small call never grows memory.
 */
export function forge_alloc(size: i32): usize {
  return size < 0 ? 0 : heap.alloc(<usize>size);
}

/** The arguments an entry point was given, `(ptr, len)` of UTF-8 JSON, as a string. */
export function input(ptr: usize, len: usize): string {
  return String.UTF8.decodeUnsafe(ptr, len);
}

/** True while `parseInput` parses: an abort then is the caller's bad input, not the overlay's fault. */
let parsingInput = false;

/**
 * The arguments an entry point was given, parsed into `T` (a `@json` class). Arguments that do
 * not parse end the call as `invalid_input` (the caller's fault, never counted toward quarantine).
 */
export function parseInput<T>(ptr: usize, len: usize): T {
  parsingInput = true;
  const value = JSON.parse<T>(input(ptr, len));
  parsingInput = false;
  return value;
}

/** Hands `json` (the text of a JSON object) back to the host, packed as `(ptr << 32) | len`. */
export function output(json: string): u64 {
  return pack(String.UTF8.encode(json));
}

/** Serialises `value` (a `@json` class) and hands it back to the host. */
export function respond<T>(value: T): u64 {
  return output(JSON.stringify<T>(value));
}

function pack(bytes: ArrayBuffer): u64 {
  return (<u64>changetype<usize>(bytes) << 32) | <u64>bytes.byteLength;
}

// ---- logging and failure ----

export function logInfo(line: string): void {
  const bytes = String.UTF8.encode(line);
  raw_log_info(changetype<usize>(bytes), <usize>bytes.byteLength);
}

export function logError(line: string): void {
  const bytes = String.UTF8.encode(line);
  raw_log_error(changetype<usize>(bytes), <usize>bytes.byteLength);
}

/** Ends the call as a failure (`overlay_error`) with `message`; nothing after it runs. */
export function fail(message: string): void {
  const bytes = String.UTF8.encode(message);
  raw_fail(changetype<usize>(bytes), <usize>bytes.byteLength);
  unreachable();
}

/**
 * Ends the call as an `invalid_input` failure with `message`: the caller's arguments are wrong.
 * Such failures are the caller's and never count toward the overlay's quarantine.
 */
export function rejectInput(message: string): void {
  const bytes = String.UTF8.encode(message);
  raw_reject_input(changetype<usize>(bytes), <usize>bytes.byteLength);
  unreachable();
}

/**
 * AssemblyScript's `abort` (a failed assertion, a JSON parse error, an out-of-bounds access),
 * routed to `forge.fail` by building with `--use abort=forgeAbort`: the module then imports
 * nothing from `env` and the message becomes the failed call's error (`invalid_input` when it
 * happened while `parseInput` parsed the arguments). It is a global so that the flag does not
 * depend on where the SDK lives.
 */
@global
export function forgeAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const text = message !== null ? message : "abort";
  const where = fileName !== null ? " at " + fileName + ":" + line.toString() + ":" + column.toString() : "";
  if (parsingInput) {
    parsingInput = false;
    rejectInput("invalid arguments: " + text + where);
  }
  fail(text + where);
}

// ---- request / response host functions ----

/** A host function's refusal: `{"error": {"code", "message"}}` (docs/abi.md). */
@json
export class HostError {
  code: string = "";
  message: string = "";
}

/** A host function's answer: exactly one of `value` (its `ok`) and `error` is set. */
export class Answer<T> {
  constructor(public value: T | null, public error: HostError | null) {}

  get ok(): bool {
    return this.error === null;
  }
}

@json
class Envelope {
  @optional
  ok: JSON.Raw | null = null;
  @optional
  error: HostError | null = null;
}

function exchange<Req, Resp>(raw: (ptr: usize, len: usize) => u64, request: Req): Answer<Resp> {
  const bytes = String.UTF8.encode(JSON.stringify<Req>(request));
  const packed = raw(changetype<usize>(bytes), <usize>bytes.byteLength);
  const answer = String.UTF8.decodeUnsafe(<usize>(packed >>> 32), <usize>(packed & 0xffffffff));
  const envelope = JSON.parse<Envelope>(answer);
  const error = envelope.error;
  if (error !== null) return new Answer<Resp>(null, error);
  const ok = envelope.ok;
  if (ok === null) {
    const invalid = new HostError();
    invalid.code = "invalid_response";
    invalid.message = "host answer has neither ok nor error: " + answer;
    return new Answer<Resp>(null, invalid);
  }
  return new Answer<Resp>(JSON.parse<Resp>(ok.toString()), null);
}

/** A capsule as `capsule_read` and `capsule_create` answer it. */
@json
export class Capsule {
  id: string = "";
  content: string = "";
  @alias("type")
  capsuleType: string = "";
  trust_level: string = "";
  version: u32 = 0;
  metadata: JSON.Obj = new JSON.Obj();
  owner: string | null = null;
  created_by_overlay: string | null = null;
  created_at: string = "";
}

/** A search hit's capsule: content cut to 500 characters. */
@json
export class CapsulePreview {
  id: string = "";
  content: string = "";
  @alias("type")
  capsuleType: string = "";
  trust_level: string = "";
}

@json
export class SearchHit {
  capsule: CapsulePreview = new CapsulePreview();
  score: f64 = 0;
}

/** A capsule to create; `capsuleType` is one of Forge's capsule types, e.g. "insight". */
@json
export class NewCapsule {
  content: string = "";
  @alias("type")
  capsuleType: string = "";
  metadata: JSON.Obj = new JSON.Obj();

  constructor(capsuleType: string, content: string) {
    this.capsuleType = capsuleType;
    this.content = content;
  }
}

/** What `capsule_delete` answers. */
@json
export class Deleted {
  deleted: string = "";
}

/** `{"id"}`: the request of `capsule_read` and `capsule_delete`. */
@json
class ReadRequest {
  id: string = "";
}

@json
class SearchRequest {
  query: string = "";
  limit: u32 = 10;
}

@json
export class HttpRequest {
  method: string = "GET";
  url: string = "";
  headers: Map<string, string> = new Map<string, string>();
  @omitnull()
  body: string | null = null;

  constructor(method: string, url: string) {
    this.method = method;
    this.url = url;
  }
}

@json
export class HttpResponse {
  status: u16 = 0;
  headers: Map<string, string> = new Map<string, string>();
  body: string = "";
}

/** `capsule_read` (capability `capsule:read`): the capsule, or `not_found`. */
export function capsuleRead(id: string): Answer<Capsule> {
  const request = new ReadRequest();
  request.id = id;
  return exchange<ReadRequest, Capsule>(raw_capsule_read, request);
}

/** `capsule_search` (capability `capsule:read`): up to `limit` hits, best first. */
export function capsuleSearch(query: string, limit: u32): Answer<SearchHit[]> {
  const request = new SearchRequest();
  request.query = query;
  request.limit = limit;
  return exchange<SearchRequest, SearchHit[]>(raw_capsule_search, request);
}

/** `capsule_create` (capability `capsule:write`): the created capsule. */
export function capsuleCreate(capsule: NewCapsule): Answer<Capsule> {
  return exchange<NewCapsule, Capsule>(raw_capsule_create, capsule);
}

/**
 * `capsule_delete` (capability `capsule:delete`, privileged): `{"deleted": id}`. A capsule above
 * the overlay's trust level is left alone and answers `not_found`, exactly like a missing one.
 */
export function capsuleDelete(id: string): Answer<Deleted> {
  const request = new ReadRequest();
  request.id = id;
  return exchange<ReadRequest, Deleted>(raw_capsule_delete, request);
}

/**
 * `http_request` (capability `network:http`, to the host patterns the manifest lists; a request
 * the host refuses inside them is answered `network_denied`, see docs/abi.md).
 */
export function httpRequest(request: HttpRequest): Answer<HttpResponse> {
  return exchange<HttpRequest, HttpResponse>(raw_http_request, request);
}
