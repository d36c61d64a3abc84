// Paying a top-up with Stripe's Card Element (templates/billing/topup.html).
// 1. confirmCardSetup: the card goes from the Card Element straight to Stripe (a SetupIntent of ours);
// 2. POST /api/billing/topups/{id}/pay: the server pays the top-up with that card;
// 3. confirmCardPayment: only when the bank asks for 3-D Secure;
// 4. "processing" until the webhook has credited the top-up, then a success notice and a fresh balance.
import { api } from "./app.js";

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

const form = document.getElementById("pay-form");
if (form && window.Stripe) setUp(form);

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

  async function pay() {
    const setupAnswer = await api("/api/billing/setup_intents", { method: "POST" });
    const setup = await setupAnswer.json();
    if (!setupAnswer.ok) return fail(setup.error && setup.error.message);
    const confirmed = await stripe.confirmCardSetup(setup.client_secret, { payment_method: { card } });
    if (confirmed.error) return fail(confirmed.error.message);

    say("Paying…");
    const payAnswer = await api(`/api/billing/topups/${form.dataset.topup}/pay`, {
      method: "POST",
      body: JSON.stringify({ setup_intent_id: confirmed.setupIntent.id }),
    });
    const paid = await payAnswer.json();
    if (!payAnswer.ok) {
      fail(paid.error && paid.error.message);
      button.hidden = true; // Stripe has closed this top-up: another card needs a new one
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
