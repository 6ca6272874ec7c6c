-- The second migration: an e-mail address per account, unique.
ALTER TABLE accounts ADD COLUMN email TEXT;
CREATE UNIQUE INDEX accounts_email ON accounts (email);
