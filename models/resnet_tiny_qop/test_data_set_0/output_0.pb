
BlogitsJ(BΠ;¦ύ>BΠ;&F]=GJκ½O‹ν=d-=d-<WΜπ½GJκ=