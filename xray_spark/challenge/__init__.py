"""The challenge stage: a challenger against the champion on the same labelled patients, by a rule set before."""
