// ECMAScript number-to-string is what RFC 8785 prescribes; print it for each input number.
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  process.stdout.write(JSON.stringify(JSON.parse(input).map((x) => JSON.stringify(x))));
});
