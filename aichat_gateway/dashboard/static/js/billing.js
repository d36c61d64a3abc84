// Paying a top-up with Stripe's Card Element (templates/billing/topup.html), or with a saved card,
// and saving a card (templates/billing/new_card.html).
// 1. confirmCardSetup: the card goes from the Card Element straight to Stripe (a SetupIntent of ours);
// 2. POST /api/billing/topups/{id}/pay: the server pays the top-up with that card (or a saved one);
// 3. confirmCardPayment: only when the bank asks for 3-D Secure;
// 4. "processing" until the webhook has credited the top-up, then a success notice and a fresh balance.
import { api } from "./api.js";

const POLL_MS = 1000;
const POLL_TRIES = 90;
const BALANCE_TRIES = 20;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The live balance, fetched here rather than by htmx: localstripe's Stripe.js declares a global
// `Element` class that shadows the DOM's, which breaks htmx on the page that loads it. The server
// answers 204 until the credit has reached the balance (just after the top-up is marked paid).
async function refreshBalance() {
  const live = document.getElementById("balance-live");
  const poll = live && live.querySelector("[hx-get]");
  if (!poll) return;
  for (let i = 0; i < BALANCE_TRIES; i += 1) {
    const answer = await fetch(poll.getAttribute("hx-get"), { credentials: "same-origin" });
    if (answer.status === 200) {
      live.innerHTML = await answer.text();
      return;
    }
    await pause(POLL_MS / 2);
  }
}

/** A SetupIntent of ours confirmed with the Card Element: {setupIntent} or {error: message}. */
async function setUpCard(stripe, card) {
  const setupAnswer = await api("/api/billing/setup_intents", { method: "POST" });
  const setup = await setupAnswer.json();
  if (!setupAnswer.ok) return { error: setup.error && setup.error.message };
  const confirmed = await stripe.confirmCardSetup(setup.client_secret, { payment_method: { card } });
  if (confirmed.error) return { error: confirmed.error.message || "The card was not accepted." };
  return { setupIntent: confirmed.setupIntent };
}

const form = document.getElementById("pay-form");
if (form && window.Stripe) setUp(form);
const cardForm = document.getElementById("card-form");
if (cardForm && window.Stripe) setUpSaving(cardForm);

function setUpSaving(form) {
  const stripe = window.Stripe(form.dataset.key);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const error = document.getElementById("card-error");
  const status = document.getElementById("pay-status");
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    status.textContent = "Saving the card…";
    const set = await setUpCard(stripe, card).catch((problem) => ({ error: String(problem) }));
    let answer = null;
    if (!set.error) {
      answer = await api("/api/billing/cards", {
        method: "POST",
        body: JSON.stringify({ setup_intent_id: set.setupIntent.id }),
      });
    }
    if (set.error || !answer.ok) {
      const body = answer ? await answer.json() : null;
      status.textContent = "";
      error.textContent = set.error || (body && body.error && body.error.message) || "The card was not saved.";
      button.disabled = false;
      return;
    }
    window.location.assign("/app/billing?done=card-added");
  });
}

function setUp(form) {
  const stripe = window.Stripe(form.dataset.key);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const error = document.getElementById("card-error");
  const status = document.getElementById("pay-status");
  const button = form.querySelector("button[type=submit]");

  const say = (text) => { status.textContent = text; };
  const fail = (text) => {
    say("");
    error.textContent = text || "The payment did not go through.";
    button.disabled = false;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    say("Checking the card…");
    try {
      await pay();
    } catch (problem) {
      fail(problem instanceof Error ? problem.message : String(problem));
    }
  });

  document.querySelectorAll("button.pay-saved").forEach((saved) => {
    saved.addEventListener("click", async () => {
      error.textContent = "";
      button.disabled = true;
      say("Paying…");
      try {
        await payWith({ payment_method_id: saved.dataset.card });
      } catch (problem) {
        fail(problem instanceof Error ? problem.message : String(problem));
      }
    });
  });

  async function pay() {
    const set = await setUpCard(stripe, card);
    if (set.error) return fail(set.error);
    say("Paying…");
    await payWith({ setup_intent_id: set.setupIntent.id });
  }

  async function payWith(cardChoice) {
    const payAnswer = await api(`/api/billing/topups/${form.dataset.topup}/pay`, {
      method: "POST",
      body: JSON.stringify(cardChoice),
    });
    const paid = await payAnswer.json();
    if (!payAnswer.ok) {
      fail(paid.error && paid.error.message);
      button.hidden = true; // Stripe has closed this top-up: another card needs a new one
      document.querySelectorAll("button.pay-saved").forEach((b) => { b.hidden = true; });
      const again = document.createElement("a");
      again.href = "/app/billing";
      again.textContent = "Start a new top-up";
      status.replaceChildren(again);
      return;
    }
    if (paid.requires_action) {
      const authenticated = await stripe.confirmCardPayment(form.dataset.secret);
      if (authenticated.error) return fail(authenticated.error.message);
    }
    form.hidden = true;
    const savedPay = document.getElementById("saved-pay");
    if (savedPay) savedPay.hidden = true;
    say("Processing: waiting for Stripe to confirm the payment…");
    await waitForCredit();
  }

  async function waitForCredit() {
    for (let i = 0; i < POLL_TRIES; i += 1) {
      const answer = await api(`/api/billing/topups/${form.dataset.topup}`);
      const topup = answer.ok ? await answer.json() : null;
      if (topup && topup.status === "succeeded") {
        status.innerHTML = "";
        const notice = document.createElement("div");
        notice.className = "notice";
        notice.textContent = `Added $${form.dataset.amount} to your balance.`;
        const back = document.createElement("a");
        back.href = "/app/billing";
        back.textContent = "Back to billing";
        status.append(notice, back);
        await refreshBalance();
        return;
      }
      if (topup && topup.status === "failed") {
        form.hidden = false;
        return fail("Stripe could not take the payment. Nothing was added to your balance.");
      }
      await pause(POLL_MS);
    }
    say("Still processing. Your balance will update when Stripe confirms; you can leave this page.");
  }
}
