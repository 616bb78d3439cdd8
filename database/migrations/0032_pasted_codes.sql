-- A promotion code pasted with the blanks around it still works.
--
-- quote(), redeem() and payment_checkout() read a typed code as upper(btrim(code)), and btrim() takes off
-- spaces (U+0020) only. A code copied from an HTML e-mail or a chat often carries a non-breaking space, a
-- tab, a line break or a zero-width space at one end, and was then an unknown code at checkout, with
-- nothing to say why. The three functions now take those blanks off both ends first (typed_codes()), so the
-- app's checkout and `tariff promo check` accept exactly the same pasted codes. Blanks inside a code still
-- make it unknown: a generated code never has any.
--
-- Each function keeps its name, arguments and defaults for the app; its body (renamed *_exact) is
-- unchanged and now gets the trimmed codes. payment_checkout_mandate() calls payment_checkout(), so it is
-- covered too. The wrappers are PL/pgSQL, which keeps its call's plan for the session: as SQL functions
-- with SET search_path they were planned again on every call, about 100 µs more per quote.

-- The characters taken off both ends of a typed code: the Unicode White_Space characters, and the
-- zero-width space, word joiner and byte-order mark that copying from a page leaves behind.
-- database/promo_codes.py PASTED_BLANKS holds the same list.
CREATE FUNCTION typed_codes(p_codes text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_codes IS NOT NULL THEN ARRAY(
        SELECT btrim(c, U&' \0009\000A\000B\000C\000D\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000\200B\2060\FEFF')
          FROM unnest(p_codes) WITH ORDINALITY AS t(c, n) ORDER BY n) END
$$;

ALTER FUNCTION quote(text, jsonb, text, text[], timestamptz) RENAME TO quote_exact;
ALTER FUNCTION redeem(text, jsonb, text, text[], text, timestamptz) RENAME TO redeem_exact;
ALTER FUNCTION payment_checkout(text, jsonb, text, text[], text, text, text, text, timestamptz)
    RENAME TO payment_checkout_exact;

CREATE FUNCTION quote(
    p_customer_id text,
    p_item        jsonb,
    p_region      text DEFAULT NULL,
    p_codes       text[] DEFAULT NULL,
    p_at          timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN quote_exact(p_customer_id, p_item, p_region, typed_codes(p_codes), p_at);
END
$$;

CREATE FUNCTION redeem(
    p_customer_id     text,
    p_item            jsonb,
    p_region          text DEFAULT NULL,
    p_codes           text[] DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_at              timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN redeem_exact(p_customer_id, p_item, p_region, typed_codes(p_codes), p_idempotency_key, p_at);
END
$$;

CREATE FUNCTION payment_checkout(
    p_customer_id text,
    p_item        jsonb,
    p_region      text DEFAULT NULL,
    p_codes       text[] DEFAULT NULL,
    p_txnid       text DEFAULT NULL,
    p_productinfo text DEFAULT NULL,
    p_environment text DEFAULT NULL,
    p_actor       text DEFAULT NULL,
    p_at          timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN payment_checkout_exact(p_customer_id, p_item, p_region, typed_codes(p_codes), p_txnid, p_productinfo,
                                  p_environment, p_actor, p_at);
END
$$;

COMMENT ON FUNCTION typed_codes(text[]) IS
    'Typed promotion codes with pasted blanks (Unicode spaces, tabs, line breaks, zero-width characters) '
    'taken off both ends, in order.';
