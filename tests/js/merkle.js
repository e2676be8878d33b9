// Cross-check with @openzeppelin/merkle-tree: same root for our leaves, and our proofs verify.
// Reads {values: [hex32], root, proofs: {value: [hex32]}} on stdin.
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const d = JSON.parse(input);
  const tree = StandardMerkleTree.of(d.values.map((v) => [v]), ["bytes32"]);
  const verified = Object.entries(d.proofs).map(([value, proof]) =>
    StandardMerkleTree.verify(d.root, ["bytes32"], [value], proof));
  process.stdout.write(JSON.stringify({ root: tree.root, verified }));
});
