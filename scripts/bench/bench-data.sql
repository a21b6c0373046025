-- Registry-like benchmark data for scripts/bench (PostgreSQL 15, server-side generation).
--
-- Loaded by scripts/bench into a fresh database; it only defines the tables and a generator
-- schema `bench_gen`. scripts/bench then calls bench_gen.fill(part, parts, scale_mb) from
-- several sessions at once (one per core), then bench_gen.finish(scale_mb, seconds), which adds
-- the keys and indexes and records the marker row in bench_meta; last it drops the generator
-- schema and pgcrypto, so the dump holds only the data. By hand, single session:
--   psql -d bench -f scripts/bench-data.sql
--   psql -d bench -c "select bench_gen.fill(0, 1, 50)" -c "select bench_gen.finish(50, 0)" \
--        -c "drop schema bench_gen cascade" -c "drop extension pgcrypto"
--
-- The mix is meant to compress like real records do (2-3x with zstd -3 on a pg_dump -Z0):
-- names, places and words drawn from lists, random digits in identifiers, md5/uuid keys,
-- timestamps, nested JSON documents, and random bytes for scanned attachments (pg_dump writes
-- bytea as hex, which compresses ~2x and no more). Row counts per MB of scale were calibrated
-- so that pg_database_size() lands near scale_mb.

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE bench_meta (
  scale_mb     integer NOT NULL,
  persons      bigint NOT NULL,
  events       bigint NOT NULL,
  attachments  bigint NOT NULL,
  generated_at timestamptz NOT NULL DEFAULT now(),
  seconds      numeric,
  sql_md5      text          -- md5 of this file, set by scripts/bench: a changed file regenerates
);

CREATE TABLE person (
  id            bigint NOT NULL,
  national_id   text NOT NULL,
  given_name    text NOT NULL,
  middle_name   text,
  family_name   text NOT NULL,
  sex           char(1) NOT NULL,
  birth_date    date NOT NULL,
  birth_place   text NOT NULL,
  district      text NOT NULL,
  mother_id     bigint,
  father_id     bigint,
  phone         text,
  email         text,
  registered_at timestamptz NOT NULL,
  status        text NOT NULL
);

CREATE TABLE event (
  id          bigint NOT NULL,
  person_id   bigint NOT NULL,
  kind        text NOT NULL,
  tracking_id text NOT NULL,
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL,
  doc         jsonb NOT NULL
);

CREATE TABLE attachment (
  id          bigint NOT NULL,
  event_id    bigint NOT NULL,
  file_name   text NOT NULL,
  mime_type   text NOT NULL,
  uploaded_at timestamptz NOT NULL,
  content     bytea NOT NULL
);
-- Scanned documents are already compressed; do not let TOAST try pglz on them.
ALTER TABLE attachment ALTER COLUMN content SET STORAGE EXTERNAL;

CREATE SCHEMA bench_gen;

-- Rows per MB of scale (see the calibration note above).
CREATE FUNCTION bench_gen.counts(scale_mb integer, OUT persons bigint, OUT events bigint, OUT attachments bigint)
LANGUAGE sql IMMUTABLE AS $$
  SELECT (scale_mb * 600)::bigint, (scale_mb * 230)::bigint, (scale_mb * 60)::bigint
$$;

-- Fill the rows whose id falls in slice `part` of `parts` (ids 1..n split in contiguous ranges).
CREATE FUNCTION bench_gen.fill(part integer, parts integer, scale_mb integer) RETURNS text
LANGUAGE plpgsql AS $fill$
DECLARE
  given text[] := ARRAY['Abena','Adaeze','Ama','Amara','Aisha','Akosua','Alice','Amina','Anna','Beatrice',
    'Bongani','Chanda','Chidi','Chipo','Chisomo','Daniel','David','Efua','Elizabeth','Emeka','Esther',
    'Fatima','Faith','Grace','Halima','Hassan','Ibrahim','Isaac','Jabari','James','Jane','Joseph',
    'Kofi','Kwame','Kwabena','Lindiwe','Lerato','Lungu','Mary','Mariam','Mercy','Michael','Moses',
    'Mulenga','Musa','Mwila','Naledi','Nomvula','Ngozi','Nia','Obinna','Oluwaseun','Patience','Paul',
    'Peter','Precious','Rebecca','Ruth','Samuel','Sarah','Sipho','Tendai','Thabo','Themba','Tumelo',
    'Victoria','Yaw','Zainab','Zanele','Zodwa','John','Joyce','Charity','Blessing','Emmanuel','Gift',
    'Harriet','Innocent','Juma','Khadija','Lucy','Martha','Nathan','Omar','Priscilla','Rose','Simon',
    'Stella','Teresa','Timothy','Ursula','Violet','Wanjiru','Xolani','Yusuf','Zuberi','Agnes','Brian',
    'Catherine','Dorcas','Edward','Florence','George','Hope','Irene','Jacob'];
  family text[] := ARRAY['Abara','Adeyemi','Agyeman','Akinyi','Asante','Banda','Bello','Boateng','Chanda',
    'Chikwanha','Chilufya','Danso','Diallo','Dlamini','Eze','Gondwe','Hamisi','Ibekwe','Juma','Kamau',
    'Kapembwa','Kariuki','Kaunda','Khumalo','Kiptoo','Koroma','Lungu','Mabaso','Machel','Malik','Mensah',
    'Mbeki','Mokoena','Moyo','Mulenga','Musonda','Mutasa','Mwale','Mwansa','Ndlovu','Njoroge','Nkosi',
    'Nnamdi','Nyirenda','Obi','Odhiambo','Okafor','Okeke','Okonkwo','Oluwole','Onyango','Otieno','Owusu',
    'Phiri','Sakala','Sesay','Shaba','Sibanda','Tembo','Traore','Tshabalala','Udeh','Wanjiku','Zulu',
    'Achieng','Bwalya','Chileshe','Daka','Fofana','Gathoni','Habimana','Kabila','Kalaba','Keita','Lwanga',
    'Makena','Mbewe','Mumba','Mwanza','Ngoma','Nyambura','Ochieng','Sampa','Simwanza','Wafula'];
  places text[] := ARRAY['Ibombo','Isamba','Itambo','Ezhi','Ilanga','Irundu','Zobwe','Afue','Embe','Esewa',
    'Chuminga','Ama','Nsali','Soka','Pili','Chibiya','Mpika','Kasama','Mansa','Mongu','Kabwe','Ndola',
    'Kitwe','Chipata','Solwezi','Livingstone','Choma','Mazabuka','Kafue','Lusaka','Chingola','Mufulira',
    'Luanshya','Kalulushi','Chililabombwe','Petauke','Nakonde','Sesheke','Kaoma','Senanga'];
  districts text[] := ARRAY['Central','Chuminga','Sulaka','Pualula','Ibombo','Isamba','Itambo','Ezhi',
    'Ilanga','Irundu','Zobwe','Afue','Embe','Esewa','Northern','Eastern','Western','Southern'];
  words text[] := ARRAY['the','a','of','and','to','in','was','is','for','on','with','by','at','from',
    'mother','father','child','informant','birth','death','marriage','certificate','registration',
    'declared','validated','registered','certified','issued','correction','requested','approved',
    'rejected','duplicate','record','office','registrar','agent','health','facility','hospital',
    'clinic','village','district','province','home','address','name','spelling','surname','date',
    'place','document','proof','identity','card','passport','number','signature','witness','brought',
    'collected','copy','printed','verified','checked','missing','incomplete','late','delayed','fee',
    'paid','waived','court','order','affidavit','notes','comment','please','review','again','before',
    'after','during','because','confirmed','phone','called','visited','informed','original','scanned',
    'attached','received','sent','returned','pending','completed','urgent','routine','follow','up',
    'community','leader','chief','midwife','nurse','doctor','reported','notification','weeks','days',
    'months','years','old','new','first','second','third','twins','born','alive','deceased','cause',
    'natural','accident','illness','unknown','married','single','divorced','widowed','occupation',
    'farmer','teacher','trader','student','unemployed','nationality','citizen','resident','foreign'];
  statuses text[] := ARRAY['REGISTERED','REGISTERED','REGISTERED','CERTIFIED','CERTIFIED','VALIDATED',
    'DECLARED','IN_PROGRESS','REJECTED','ARCHIVED'];
  kinds text[] := ARRAY['birth','birth','birth','birth','death','death','marriage'];
  mimes text[] := ARRAY['image/jpeg','image/jpeg','image/png','application/pdf'];
  docs text[] := ARRAY['birth-notification','mother-id','father-id','informant-id','proof-of-address',
    'medical-certificate','court-order','affidavit','marriage-certificate','coroner-report'];
  c record;
  lo bigint; hi bigint;
  t0 timestamptz := clock_timestamp();
BEGIN
  c := bench_gen.counts(scale_mb);
  PERFORM setseed(0.001 * (part + 1));

  -- person -------------------------------------------------------------------------------------
  lo := c.persons * part / parts + 1; hi := c.persons * (part + 1) / parts;
  INSERT INTO person
  SELECT g,
         lpad((floor(random() * 1e9))::bigint::text, 9, '0') || '-' || (g % 97)::text,
         given[1 + floor(random() * array_length(given, 1))::int],
         CASE WHEN random() < 0.4 THEN given[1 + floor(random() * array_length(given, 1))::int] END,
         family[1 + floor(random() * array_length(family, 1))::int],
         CASE WHEN random() < 0.5 THEN 'F' ELSE 'M' END,
         date '1930-01-01' + floor(random() * 34000)::int,
         places[1 + floor(random() * array_length(places, 1))::int],
         districts[1 + floor(random() * array_length(districts, 1))::int],
         CASE WHEN random() < 0.7 THEN 1 + floor(random() * c.persons)::bigint END,
         CASE WHEN random() < 0.5 THEN 1 + floor(random() * c.persons)::bigint END,
         CASE WHEN random() < 0.6 THEN '+2609' || lpad(floor(random() * 1e8)::bigint::text, 8, '0') END,
         CASE WHEN random() < 0.2 THEN lower(family[1 + floor(random() * array_length(family, 1))::int])
              || (g % 1000)::text || '@example.org' END,
         timestamptz '2015-01-01 00:00+00' + random() * interval '3500 days',
         statuses[1 + floor(random() * array_length(statuses, 1))::int]
  FROM generate_series(lo, hi) g;

  -- event --------------------------------------------------------------------------------------
  lo := c.events * part / parts + 1; hi := c.events * (part + 1) / parts;
  INSERT INTO event
  SELECT g, e.person_id, e.kind, e.tracking, e.created, e.created + e.age,
    jsonb_build_object(
      'id', gen_random_uuid(),
      'type', e.kind,
      'trackingId', e.tracking,
      'registrationNumber', CASE WHEN random() < 0.8
        THEN to_char(e.created, 'YYYY') || lpad(floor(random() * 1e10)::bigint::text, 10, '0') END,
      'subject', jsonb_build_object(
        'name', jsonb_build_array(jsonb_build_object(
          'use', 'en',
          'firstNames', given[1 + floor(random() * array_length(given, 1))::int],
          'familyName', family[1 + floor(random() * array_length(family, 1))::int])),
        'gender', CASE WHEN random() < 0.5 THEN 'female' ELSE 'male' END,
        'birthDate', to_char(date '1930-01-01' + floor(random() * 34000)::int, 'YYYY-MM-DD'),
        'multipleBirth', floor(random() * 1.1)::int + 1,
        'weightAtBirth', round((1.5 + random() * 3)::numeric, 2)),
      'mother', jsonb_build_object(
        'firstNames', given[1 + floor(random() * array_length(given, 1))::int],
        'familyName', family[1 + floor(random() * array_length(family, 1))::int],
        'nationalId', lpad((floor(random() * 1e9))::bigint::text, 9, '0'),
        'maritalStatus', (ARRAY['MARRIED','SINGLE','WIDOWED','DIVORCED'])[1 + floor(random() * 4)::int],
        'educationalAttainment', (ARRAY['NO_SCHOOLING','PRIMARY_ISCED_1','LOWER_SECONDARY_ISCED_2',
          'UPPER_SECONDARY_ISCED_3','POST_SECONDARY_ISCED_4'])[1 + floor(random() * 5)::int],
        'address', jsonb_build_object(
          'type', 'PRIMARY_ADDRESS',
          'line', jsonb_build_array((1 + floor(random() * 300))::int::text,
                                    words[1 + floor(random() * array_length(words, 1))::int] || ' Road'),
          'district', districts[1 + floor(random() * array_length(districts, 1))::int],
          'state', districts[1 + floor(random() * array_length(districts, 1))::int],
          'country', 'FAR')),
      'informant', jsonb_build_object(
        'relationship', (ARRAY['MOTHER','FATHER','GRANDMOTHER','BROTHER','SISTER','OTHER'])[1 + floor(random() * 6)::int],
        'phone', '+2607' || lpad(floor(random() * 1e8)::bigint::text, 8, '0'),
        'email', CASE WHEN random() < 0.3 THEN md5(g::text || 'e') || '@example.org' END),
      'location', jsonb_build_object(
        'facility', places[1 + floor(random() * array_length(places, 1))::int] || ' Health Facility',
        'facilityId', gen_random_uuid(),
        'partOf', 'Location/' || md5(g::text || 'l'),
        'geo', jsonb_build_array(round((-18 + random() * 10)::numeric, 6), round((22 + random() * 11)::numeric, 6))),
      'history', (SELECT jsonb_agg(jsonb_build_object(
                    'action', a.action,
                    'at', to_char(e.created + (s * interval '17 hours'), 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                    'by', md5((g * 7 + s)::text),
                    'office', places[1 + floor(random() * array_length(places, 1))::int] || ' Office',
                    'reason', CASE WHEN random() < 0.2
                      THEN words[1 + floor(random() * array_length(words, 1))::int] || ' '
                        || words[1 + floor(random() * array_length(words, 1))::int] END))
                  FROM generate_series(1, 2 + (g % 4)::int) s,
                       LATERAL (SELECT (ARRAY['DECLARED','VALIDATED','REGISTERED','CERTIFIED','ISSUED'])[s] AS action) a),
      'comments', (SELECT string_agg(words[1 + floor(random() * array_length(words, 1))::int], ' ')
                   FROM generate_series(1, 5 + (g % 11)::int * 6) w),
      'flags', jsonb_build_object('late', random() < 0.1, 'duplicate', random() < 0.02,
                                  'corrected', random() < 0.05))
  FROM (
    SELECT g AS id,
           1 + floor(random() * c.persons)::bigint AS person_id,
           kinds[1 + floor(random() * array_length(kinds, 1))::int] AS kind,
           'B' || upper(substr(md5(g::text), 1, 7)) AS tracking,
           timestamptz '2015-01-01 00:00+00' + random() * interval '3500 days' AS created,
           random() * interval '90 days' AS age
    FROM generate_series(lo, hi) g
  ) e(g, person_id, kind, tracking, created, age);

  -- attachment ---------------------------------------------------------------------------------
  lo := c.attachments * part / parts + 1; hi := c.attachments * (part + 1) / parts;
  INSERT INTO attachment
  SELECT g,
         1 + floor(random() * c.events)::bigint,
         docs[1 + floor(random() * array_length(docs, 1))::int] || '-' || g::text
           || CASE WHEN random() < 0.75 THEN '.jpg' ELSE '.pdf' END,
         mimes[1 + floor(random() * array_length(mimes, 1))::int],
         timestamptz '2015-01-01 00:00+00' + random() * interval '3500 days',
         (SELECT string_agg(gen_random_bytes(1024), ''::bytea)
          FROM generate_series(1, 2 + (g % 7)::int) k)   -- 2..8 KiB, mean 5 KiB
  FROM generate_series(lo, hi) g;

  RETURN format('part %s/%s: %s s', part, parts,
                round(extract(epoch FROM clock_timestamp() - t0)::numeric, 1));
END
$fill$;

-- Keys, indexes, marker row. scripts/bench then drops schema bench_gen and pgcrypto.
CREATE FUNCTION bench_gen.finish(scale_mb integer, gen_seconds numeric) RETURNS void
LANGUAGE plpgsql AS $finish$
DECLARE c record;
BEGIN
  c := bench_gen.counts(scale_mb);
  ALTER TABLE person ADD PRIMARY KEY (id);
  ALTER TABLE event ADD PRIMARY KEY (id);
  ALTER TABLE attachment ADD PRIMARY KEY (id);
  CREATE INDEX person_national_id ON person (national_id);
  CREATE INDEX person_family_name ON person (family_name, given_name);
  CREATE INDEX event_person ON event (person_id);
  CREATE UNIQUE INDEX event_tracking ON event (tracking_id, id);
  CREATE INDEX attachment_event ON attachment (event_id);
  ALTER TABLE event ADD FOREIGN KEY (person_id) REFERENCES person (id);
  ALTER TABLE attachment ADD FOREIGN KEY (event_id) REFERENCES event (id);
  INSERT INTO bench_meta (scale_mb, persons, events, attachments, seconds)
  VALUES (scale_mb, c.persons, c.events, c.attachments, gen_seconds);
END
$finish$;
