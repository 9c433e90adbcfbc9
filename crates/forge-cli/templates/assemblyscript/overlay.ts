// {{name}}: a Forge overlay. `process` greets whoever `{"name": ...}` names.
import { JSON } from "json-as";
import { logInfo, parseInput, respond } from "@forge/overlay-sdk/assembly/index";
export { forge_alloc } from "@forge/overlay-sdk/assembly/index";

@json
class Args {
  name: string | null = null;
}

@json
class Greeting {
  greeting: string = "";
}

export function process(ptr: usize, len: usize): u64 {
  logInfo("greeting");
  const name = parseInput<Args>(ptr, len).name;
  const out = new Greeting();
  out.greeting = "Hello, " + (name !== null ? name : "world") + "!";
  return respond<Greeting>(out);
}
