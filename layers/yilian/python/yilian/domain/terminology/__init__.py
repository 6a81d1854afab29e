"""Clinical terminologies (ICD-10 diagnoses) used by referrals and health records."""
