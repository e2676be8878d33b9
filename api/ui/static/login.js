// Sign in to the dashboard with the API's own authentication: the participant's key signs the
// EIP-4361 challenge here, in the browser (ethers v6, served locally); only the signature and
// then the access token leave the page. The token is handed to /ui/session, which keeps it in
// an HttpOnly, SameSite=Strict cookie.
"use strict";
(() => {
  const keyForm = document.getElementById("key-form");
  const tokenForm = document.getElementById("token-form");
  const statusEl = document.getElementById("status");
  const next = keyForm.dataset.next || null;

  // ethers (~0.5 MB) is fetched after the page has loaded, or as soon as a key file is
  // chosen, so the form itself appears at once.
  let ethersLoading = null;
  function loadEthers() {
    if (typeof ethers !== "undefined") return Promise.resolve();
    if (!ethersLoading) {
      ethersLoading = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = keyForm.dataset.ethers;
        script.onload = () => resolve();
        script.onerror = () => {
          ethersLoading = null;
          reject(new Error("The signing library (ethers) did not load; sign in with an access token."));
        };
        document.head.appendChild(script);
      });
    }
    return ethersLoading;
  }
  window.addEventListener("load", () => { loadEthers().catch(() => {}); });
  document.getElementById("keyfile").addEventListener("change", () => {
    loadEthers().catch(() => {});
  });

  function show(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status" + (kind ? " " + kind : "");
  }

  async function postJson(url, body) {
    const res = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      // Errors are RFC 9457 problem+json: {type, title, status, detail, code, ...}.
      const code = data && data.code;
      throw new Error(
        code ? `${data.detail || data.title} (${code})` : `${url} answered HTTP ${res.status}`,
      );
    }
    return data;
  }

  async function startSession(token) {
    const session = await postJson("/ui/session", { accessToken: token, next });
    show(`Signed in as ${session.role} ${session.orgId || ""}. Opening the dashboard…`, "ok");
    window.location.assign(session.next);
  }

  async function walletFrom(text, passphrase) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (_) {
      throw new Error("The key file is not JSON.");
    }
    let wallet;
    if (doc && typeof doc.private_key === "string") {
      try {
        wallet = new ethers.Wallet(doc.private_key);
      } catch (_) {
        throw new Error("The key file's private_key is not a valid secp256k1 key.");
      }
    } else if (doc && (doc.crypto || doc.Crypto)) {
      if (!passphrase) throw new Error("This keystore is encrypted: enter its passphrase.");
      show("Decrypting the keystore…");
      try {
        wallet = await ethers.Wallet.fromEncryptedJson(text, passphrase);
      } catch (err) {
        const wrong = /password/i.test(String(err && err.message));
        throw new Error(wrong ? "Wrong passphrase for this keystore."
                              : `Cannot decrypt the keystore: ${err.message}`);
      }
    } else {
      throw new Error("Not a key file: expected a V3 keystore or {\"address\", \"private_key\"}.");
    }
    if (doc.address) {
      const stated = String(doc.address).toLowerCase().replace(/^(0x)?/, "0x");
      if (stated !== wallet.address.toLowerCase()) {
        throw new Error("The key file's address does not match its key.");
      }
    }
    return wallet;
  }

  function busy(form, on) {
    for (const el of form.querySelectorAll("button, input, textarea")) el.disabled = on;
  }

  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(keyForm, true);
    const passInput = document.getElementById("passphrase");
    try {
      await loadEthers();
      const file = document.getElementById("keyfile").files[0];
      if (!file) throw new Error("Choose your key file.");
      const wallet = await walletFrom(await file.text(), passInput.value);
      show(`Signing the sign-in message as ${wallet.address}…`);
      const challenge = await postJson("/v1/auth/challenge", { address: wallet.address });
      const signature = await wallet.signMessage(challenge.message);
      const token = await postJson("/v1/auth/token", {
        address: wallet.address, nonce: challenge.nonce, signature,
      });
      await startSession(token.accessToken);
    } catch (err) {
      show(err.message, "error");
      busy(keyForm, false);
    } finally {
      passInput.value = "";
    }
  });

  tokenForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(tokenForm, true);
    try {
      const token = document.getElementById("token").value.trim().replace(/^Bearer\s+/i, "");
      if (!token) throw new Error("Paste an access token.");
      await startSession(token);
    } catch (err) {
      show(err.message, "error");
      busy(tokenForm, false);
    }
  });
})();
