"""File formats under the datasets: the one CSV reader every official builder
shares (:mod:`.csv_core`) and array_record block datasets written and read in
bounded memory (:mod:`.block_dataset`)."""
