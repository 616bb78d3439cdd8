"""The simulator's HTML: hosted checkout, PayU-like error page, the auto-submitting return form, an index.

Self-contained pages (inline CSS, one line of inline script for the auto-submit): nothing is loaded from
the network, so the simulator works offline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

from publishers.payu.simulator.state import TEST_CARDS, TEST_OTP, Payment

STYLE = """
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
background:#f3f5f9;color:#1d2433}main{max-width:760px;margin:32px auto;padding:0 16px}
.card{background:#fff;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:24px;
margin-bottom:16px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 12px}
.muted{color:#5b6478;font-size:13px}
.badge{display:inline-block;background:#fff4d6;color:#7a5600;border-radius:6px;padding:2px 8px;font-size:12px;
font-weight:600}.amount{font-size:28px;font-weight:700;margin:8px 0}label{display:block;margin:10px 0 4px;
font-weight:600;font-size:13px}
input,select{width:100%;padding:9px 10px;border:1px solid #c8cfdc;border-radius:8px;
font:inherit}.row{display:flex;gap:12px}.row>div{flex:1}.buttons{display:flex;gap:10px;margin-top:20px;
flex-wrap:wrap}
button{border:0;border-radius:8px;padding:11px 18px;font:inherit;font-weight:600;cursor:pointer}
.pay{background:#1a7f37;color:#fff}.fail{background:#b42318;color:#fff}.cancel{background:#e4e7ec;color:#1d2433}
.pending{background:#fff4d6;color:#7a5600}table{width:100%;border-collapse:collapse;font-size:13px}
td,th{text-align:left;padding:6px;border-bottom:1px solid #e4e7ec;vertical-align:top}code{font-size:12px;
word-break:break-all}.error{border-left:4px solid #b42318}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>"
    )


def checkout_page(payment: Payment, key: str) -> str:
    f = payment.fields
    mandate = ""
    if f.get("si") == "1":
        details: dict[str, Any] = json.loads(f.get("si_details") or "{}")
        mandate = (
            '<p class="badge">Standing instruction</p><p class="muted">You authorise recurring '
            f"debits of up to <b>₹{escape(str(details.get('billingAmount', '')))}</b> "
            f"{escape(str(details.get('billingCycle', '')).lower())} from "
            f"{escape(str(details.get('paymentStartDate', '')))} to "
            f"{escape(str(details.get('paymentEndDate', '') or 'cancellation'))}.</p>"
        )
    cards = "".join(
        f'<option value="{number}">{number} ({brand})</option>' for number, brand in TEST_CARDS.items()
    )
    amount = f"{payment.amount:.2f}"
    body = f"""
<div class="card"><span class="badge">PayU simulator · no real money</span>
<h1>{escape(f.get("productinfo", ""))}</h1>
<p class="muted">Merchant key {escape(key)} · Order {escape(payment.txnid)} · {escape(f.get("firstname", ""))}
&lt;{escape(f.get("email", ""))}&gt;</p>
<div class="amount">₹{escape(amount)}</div>{mandate}</div>
<form class="card" method="post" action="/_sim/checkout/{escape(payment.mihpayid)}">
<h2>Pay with</h2>
<label for="method">Method</label>
<select id="method" name="method"><option value="card">Card</option><option value="upi">UPI</option>
<option value="netbanking">Net banking</option></select>
<label for="card_number">Card number (test cards)</label>
<select id="card_number" name="card_number">{cards}<option value="4111111111111111">4111111111111111
(not a test card: declined)</option></select>
<div class="row"><div><label for="expiry">Expiry</label><input id="expiry" name="expiry" value="05/30"></div>
<div><label for="cvv">CVV</label><input id="cvv" name="cvv" value="123"></div>
<div><label for="otp">OTP (test OTP {TEST_OTP})</label><input id="otp" name="otp" value="{TEST_OTP}"
 inputmode="numeric"></div></div>
<label for="vpa">UPI id (any …@payu succeeds)</label><input id="vpa" name="vpa" value="anything@payu">
<div class="buttons">
<button class="pay" name="outcome" value="approve">Pay ₹{escape(amount)}</button>
<button class="fail" name="outcome" value="failure">Simulate a bank failure</button>
<button class="pending" name="outcome" value="pending">Leave pending</button>
<button class="cancel" name="outcome" value="cancel">Cancel</button>
</div></form>"""
    return _page(f"Pay ₹{amount} — PayU simulator", body)


def error_page(reason: str, detail: str | None = None) -> str:
    extra = f"<p><code>{escape(detail)}</code></p>" if detail else ""
    body = (
        '<div class="card error"><span class="badge">PayU simulator</span>'
        "<h1>Sorry, some problem occurred.</h1>"
        f'<p id="error-reason"><b>Error Reason:</b> {escape(reason)}</p>{extra}'
        '<p class="muted">This is the page PayU shows when the checkout request itself is wrong; the '
        "customer is not sent back to your site.</p></div>"
    )
    return _page("Error — PayU simulator", body)


def return_form(url: str, fields: Mapping[str, str]) -> str:
    """What the browser gets after paying: a form that posts PayU's response to surl/furl by itself."""
    inputs = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    body = (
        f'<form class="card" id="payu-response" method="post" action="{escape(url)}">{inputs}'
        f'<h2>Returning to the merchant…</h2><p class="muted">{escape(url)}</p>'
        '<button class="pay" type="submit">Continue</button></form>'
        "<script>document.getElementById('payu-response').submit()</script>"
    )
    return _page("Redirecting — PayU simulator", body)


def index_page(snapshot: Mapping[str, Any], url: str) -> str:
    rows = "".join(
        f"<tr><td>{escape(p['txnid'])}</td><td><code>{escape(p['mihpayid'])}</code></td>"
        f"<td>{escape(p['amount'])}</td><td>{escape(p['status'])} ({escape(p['unmappedstatus'])})</td>"
        f"<td>{', '.join(escape(r['amt'] + ' ' + r['status']) for r in p['refunds']) or '-'}</td></tr>"
        for p in reversed(snapshot["payments"])
    )
    body = f"""
<div class="card"><span class="badge">PayU simulator</span><h1>Offline PayU at {escape(url)}</h1>
<p class="muted">Checkout: POST {escape(url)}/_payment · Merchant API: POST
{escape(url)}/merchant/postservice.php?form=2 · State as JSON: <a href="/_sim/state">/_sim/state</a></p></div>
<div class="card"><h2>Payments</h2><table><tr><th>txnid</th><th>mihpayid</th><th>amount</th><th>status</th>
<th>refunds</th></tr>{rows or '<tr><td colspan="5">none yet</td></tr>'}</table></div>"""
    return _page("PayU simulator", body)
