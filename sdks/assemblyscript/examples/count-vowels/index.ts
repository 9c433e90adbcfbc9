// count-vowels with the AssemblyScript SDK: {"text": "..."} in, {"vowels": N} out, counting
// `aeiouAEIOU` exactly as the Rust example does.
import { JSON } from "json-as";
import { parseInput, respond } from "../../assembly/index";
export { forge_alloc } from "../../assembly/index";

@json
class Args {
  text: string = "";
}

@json
class Output {
  vowels: i32 = 0;
}

function isVowel(c: i32): bool {
  switch (c) {
    case 0x61: case 0x65: case 0x69: case 0x6f: case 0x75:
    case 0x41: case 0x45: case 0x49: case 0x4f: case 0x55:
      return true;
    default:
      return false;
  }
}

export function count_vowels(ptr: usize, len: usize): u64 {
  const text = parseInput<Args>(ptr, len).text;
  const out = new Output();
  for (let i = 0; i < text.length; i++) {
    if (isVowel(text.charCodeAt(i))) out.vowels++;
  }
  return respond<Output>(out);
}
