\set c random(1, 1000)
SELECT credyt.balance('c' || :c);
