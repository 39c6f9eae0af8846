//! Seats (SPEC §9): set_seats, assign_seat, unassign_seat. The billed quantity of a
//! seat fee is the seats asked for, but at least the users assigned. An increase during
//! a period charges the prorated rest of it at once; a decrease (set_seats lower, a
//! user unassigned) applies from the next period: a period paid in advance is not
//! refunded.

use super::*;

/// Locks a subscription of the account in scope; refuses an ended one. Returns its
/// customer.
fn lock_active(c: &mut SpiClient<'_>, account: &str, id: &str) -> Result<String> {
    let customer = subscription_customer(c, account, id)?;
    let t = run(
        c,
        "SELECT coalesce(ends_at <= now(), false) AS over FROM credyt.subscription \
         WHERE customer_id = $3 AND id = $1 AND account_id = $2 FOR UPDATE",
        &[id.into(), account.into(), customer.as_str().into()],
    )?;
    if t.is_empty() {
        return Err(CyError::not_found(format!("unknown subscription {id}")));
    }
    if t.first().req::<bool>("over")? {
        return Err(CyError::conflict(format!("subscription {id} has ended"))
            .hint("seats belong to an active or scheduled subscription"));
    }
    Ok(customer)
}

/// After a change of seats: charges what is due, then the prorated rest of the current
/// period of each seat fee for the seats billed above what it was charged for.
/// Returns the billed quantity.
fn reprice(c: &mut SpiClient<'_>, customer: &str, subscription: &str) -> Result<i32> {
    let now = pgrx::datetime::now().into_inner();
    let fees = charge_subscription(c, customer, subscription, now)?;
    let counts = Counts::read(c, customer, subscription)?;
    let qty = counts.seats;
    for mut fee in fees.into_iter().filter(|f| f.seat) {
        let Some(k) = fee.billed_period else { continue };
        let (start, Some(end)) = fee.period(k) else { continue };
        if !(start <= now && now < end) || counts.ends.is_some_and(|e| now >= e) || qty <= fee.billed_quantity {
            continue;
        }
        let added = qty - fee.billed_quantity;
        // by the whole seconds left in the period
        let (left, length) = ((end - now) / 1_000_000, (end - start) / 1_000_000);
        let amount = prorate(fee.unit_price * Decimal::from(added), left, length);
        let seq = one::<i32>(
            c,
            "SELECT coalesce(max(seq), 0) + 1 FROM credyt.subscription_charge \
             WHERE customer_id = $6 AND subscription_id = $1 AND version = $2 AND position = $3 AND asset = $4 \
               AND period = $5",
            &[
                fee.subscription.as_str().into(),
                fee.version.into(),
                fee.position.into(),
                fee.asset.as_str().into(),
                k.into(),
                customer.into(),
            ],
        )?
        .unwrap_or(1);
        bill(c, &fee, &Charge { period: k, seq, start, end: Some(end), quantity: added, amount }, true)?;
        fee.billed_quantity = qty;
        run(
            c,
            "UPDATE credyt.subscription_fee SET billed_quantity = $2 WHERE customer_id = $3 AND id = $1",
            &[fee.id.into(), fee.billed_quantity.into(), customer.into()],
        )?;
    }
    Ok(qty)
}

/// A seat call: the subscription locked (it must be the scope's and not ended), the
/// change made, then repriced. Returns the quantity billed.
fn seat_call(
    subscription_id: Option<String>,
    change: impl FnOnce(&mut SpiClient<'_>, &str, &str, &str) -> Result<()>,
) -> i32 {
    api(move || {
        let id = validate::required("subscription_id", subscription_id)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = lock_active(c, &account, &id)?;
            change(c, &account, &customer, &id)?;
            reprice(c, &customer, &id)
        })
    })
}

/// Sets the seats of a subscription; returns the quantity billed (at least the users
/// assigned).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_seats(subscription_id: Option<String>, quantity: Option<i32>) -> i32 {
    let quantity = api(|| {
        let q = validate::required("quantity", quantity)?;
        if !(0..=1_000_000).contains(&q) {
            return Err(CyError::invalid("quantity must be from 0 to 1000000").detail(format!("got {q}")));
        }
        Ok(q)
    });
    seat_call(subscription_id, move |c, _, customer, id| {
        run(
            c,
            "UPDATE credyt.subscription SET seats = $2 WHERE customer_id = $3 AND id = $1",
            &[id.into(), quantity.into(), customer.into()],
        )?;
        Ok(())
    })
}

/// Assigns a seat to a user (again: nothing changes). Past the seats asked for, the
/// seats rise to the users assigned, and the rest of the period is charged for the
/// extra seat. Returns the quantity billed.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn assign_seat(subscription_id: Option<String>, user_ref: Option<String>) -> i32 {
    let user = api(|| validate::key("user_ref", user_ref));
    seat_call(subscription_id, move |c, account, customer, id| {
        // (two statements: on Citus the assignments are a reference table, the
        // subscription is on its customer's shard)
        run(
            c,
            "INSERT INTO credyt.seat_assignment (account_id, subscription_id, user_ref) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[account.into(), id.into(), user.as_str().into()],
        )?;
        run(
            c,
            "UPDATE credyt.subscription s SET seats = greatest(s.seats, \
               (SELECT count(*) FROM credyt.seat_assignment x WHERE x.subscription_id = $1)) \
             WHERE s.customer_id = $2 AND s.id = $1",
            &[id.into(), customer.into()],
        )?;
        Ok(())
    })
}

/// Takes a user's seat back. The seats asked for stay as they are (lower them with
/// set_seats, from the next period). Returns the quantity billed.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn unassign_seat(subscription_id: Option<String>, user_ref: Option<String>) -> i32 {
    let user = api(|| validate::key("user_ref", user_ref));
    seat_call(subscription_id, move |c, _, _, id| {
        let gone = one::<bool>(
            c,
            "DELETE FROM credyt.seat_assignment WHERE subscription_id = $1 AND user_ref = $2 RETURNING true",
            &[id.into(), user.as_str().into()],
        )?;
        match gone {
            Some(_) => Ok(()),
            None => Err(CyError::not_found(format!("user {user:?} holds no seat of subscription {id}"))),
        }
    })
}
