// Cross-check with a standard client: ethers v6 recovers the signer of our EIP-712 records and
// computes the same struct hash. Reads [{typedData, signature}] JSON on stdin.
const { verifyTypedData, TypedDataEncoder } = require("ethers");
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map(({ typedData, signature }) => {
    const types = { ...typedData.types };
    delete types.EIP712Domain; // ethers derives the domain type itself
    return {
      signer: verifyTypedData(typedData.domain, types, typedData.message, signature),
      structHash: TypedDataEncoder.from(types).hash(typedData.message),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
